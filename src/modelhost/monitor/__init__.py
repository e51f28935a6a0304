"""modelhost's built-in Model Monitor analyzer: what the ``sagemaker-model-monitor-analyzer`` image
runs (``python -m modelhost.monitor``), without Spark. Baselines (statistics.json, constraints.json)
and monitoring runs over captured data (constraint_violations.json), streaming, with KLL sketches
from datasketches. The container contract is the AWS one (reference 8.3): environment variables in,
files in ``output_path`` out."""
