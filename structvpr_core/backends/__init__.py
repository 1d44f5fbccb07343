"""Inference runtimes of the Extractor and the ONNX files they run.

- ``runner``: the contract every runner keeps (BGR uint8 batch at input size -> L2-normalised
  float32 descriptors), whatever the runtime;
- ``torch_backend`` / ``ort_backend``: the two runners (ORT also drives CUDA and TensorRT);
- ``providers``: which runtime and ONNX Runtime execution providers a request resolves to;
- ``onnx_format``: the ONNX graph's names, its JSON sidecar and the check before a file runs;
- ``onnx_export``: the raw PyTorch -> ONNX conversion;
- ``onnx_cache``: ONNX exports made on first use, cached by model fingerprint;
- ``int8``: static int8 quantisation of an export (``structvpr export --int8``).

This package imports nothing above it (no extractor, no export pipeline); this file imports
none of its submodules.
"""
