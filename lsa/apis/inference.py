"""An inference model from a config and a checkpoint, loaded safely and checked for coverage."""
from __future__ import annotations

import torch


def init_inference_model(toolbox: str, config: str, checkpoint: str, device: str = 'cpu',
                         allow_partial: bool = False) -> torch.nn.Module:
    """The toolbox's inference model (mmdet/mmseg/mmpretrain) with ``checkpoint`` loaded.

    Call :func:`lsa.compat.apply` first. Loading goes through mmengine's loaders, which
    :func:`lsa.compat.apply` routes to lsa's allowlisted loader (no code runs from the file).

    Raises:
        PartialCheckpointError: The checkpoint leaves weights of the model unloaded (naming how
            many and under which prefixes), unless ``allow_partial``.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    from lsa.apis.checkpoint_coverage import check_checkpoint_coverage
    if toolbox == 'mmdet':
        from mmdet.apis import init_detector
        model = init_detector(config, checkpoint, device=device)
    elif toolbox == 'mmseg':
        from mmseg.apis import init_model
        model = init_model(config, checkpoint, device=device)
    else:
        from mmpretrain.apis import get_model
        model = get_model(config, pretrained=checkpoint, device=device)
    state = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    check_checkpoint_coverage(model, state, checkpoint, allow_partial)
    return model
