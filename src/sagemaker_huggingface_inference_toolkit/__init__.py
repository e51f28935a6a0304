"""modelhost's stand-in for the SageMaker Hugging Face inference toolkit, for user ``code/inference.py`` written for
the HF DLC (``from sagemaker_huggingface_inference_toolkit import decoder_encoder``). The implementations live in
``modelhost.serving.runtimes.huggingface``; these modules re-export them under the toolkit's names.
"""

__version__ = "2.6.0+modelhost"
