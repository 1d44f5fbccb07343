"""The node's detector from its parameters: extractor, map database and verifier (ROS-free).

Kept apart from the node so that the rules of a start-up (which model embeds the frames, when a
missing map is an empty one, when a session that could not be saved is refused before the model
loads) can be read in one place and called without rclpy.
"""

from __future__ import annotations

from pathlib import Path

from structvpr_core.errors import MapError

from .params import NodeParams


def build_detector(params: NodeParams, logger):
    """Extractor + map database + verifier -> (LoopClosureDetector, Extractor), from parameters.

    The extractor embeds the camera frames: query_checkpoint when given (a query encoder for the
    map's model, accepted by the map only then), else checkpoint. The verifier is made even with
    verify off (it loads nothing until used), so that verify can be switched on while the node
    runs, with the configured verify_feature. ``logger``: anything with ``info`` (rclpy's or logging's).
    """
    from structvpr_core.extractor import Extractor
    from structvpr_core.loopclosure import LoopClosureDetector
    from structvpr_core.mapdb import MapDatabase
    from structvpr_core.mapdb.storage import check_writable
    from structvpr_core.verify import GeometricVerifier, VerifyConfig

    if params.mode == "mapping":  # before the model loads: a session that cannot be saved is refused
        check_writable(Path(params.map_path).absolute())
    extractor = Extractor(
        params.query_checkpoint or params.checkpoint or None,
        device=params.device,
        backend=params.backend,
        threads=params.cpu_threads or None,
        image_size=params.image_size,
        batch_size=1,
    )
    if params.cpu_threads > 0 and extractor.backend == "torch":
        # ONNX Runtime got the count above; only PyTorch itself is told here, so that an exported
        # model never loads torch (a runtime-only install has none).
        import torch

        torch.set_num_threads(params.cpu_threads)
    if params.mode == "mapping" and not Path(params.map_path).exists():
        logger.info(f"mapping: no map at {params.map_path} yet, starting an empty one")
        mapdb = MapDatabase.create(extractor.fingerprint, extractor.dim)
    else:
        mapdb = _load_map(params, extractor)
    if params.mode == "mapping":
        check_writable(Path(params.map_path).absolute(), mapdb.estimated_bytes())  # room for a save
    verifier = GeometricVerifier(VerifyConfig(feature=params.verify_feature))
    detector = LoopClosureDetector(extractor, mapdb, params.detector_config(), verifier=verifier)
    return detector, extractor


def _load_map(params: NodeParams, extractor):
    from structvpr_core.mapdb import MapDatabase

    try:
        return MapDatabase.load(
            params.map_path,
            expected_fingerprint=extractor.fingerprint,
            query_encoder_for=extractor.query_encoder_for,
        )
    except MapError as e:
        if "input_size" in str(e):  # the usual cause: parameters left at another size
            raise MapError(f"{e}; set the parameters image_width/image_height to the map's input size") from None
        raise
