"""Inference runtimes of the Extractor and the files they run.

- ``providers``: which runtime and ONNX Runtime execution providers a request resolves to;
- ``torch_backend`` / ``ort_backend``: the two runners (ORT also drives CUDA and TensorRT);
- ``onnx_cache``: ONNX exports made on first use, cached by model fingerprint;
- ``preprocess``: pixels -> the normalised NCHW tensor the ONNX models take;
- ``int8``: static int8 quantisation of an export (``structvpr export --int8``).
"""
