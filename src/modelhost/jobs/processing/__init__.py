"""Processing jobs: download the inputs, run the image's program, upload the outputs."""
