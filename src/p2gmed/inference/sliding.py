"""Sliding-window inference: a thin wrapper over MONAI's `sliding_window_inference`.

The whole volume stays on the CPU; only windows (sw_batch_size x M x ROI) move to the compute device, and the
stitched output is accumulated on the compute device or, with stitch "cpu", in host memory (MONAI's
`sw_device` / `device` split), which bounds GPU memory for whole-body PET/CT. Volumes smaller than the ROI along
an axis are padded by edge replication (not zeros, which would be HU 0 for CT) and cropped back by MONAI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from monai.inferers import sliding_window_inference

from p2gmed.errors import InputError

log = logging.getLogger(__name__)

#: with stitch "auto" on CUDA, accumulate on the CPU when the stitched output (plus MONAI's weight map) would
#: need more than this fraction of the free GPU memory
AUTO_STITCH_FRACTION = 0.25

Predictor = Callable[[torch.Tensor], torch.Tensor]


def stitch_device(stitch: str, device: torch.device, out_channels: int, spatial: Sequence[int]) -> torch.device:
    """Where the stitched output is accumulated.

    Args:
        stitch: "cpu", "same" (the compute device) or "auto" (CPU when the output would not fit comfortably).
        device: the compute device.
        out_channels: channels of the model output.
        spatial: (D, H, W) of the whole volume.
    """
    if stitch not in ("cpu", "same", "auto"):
        raise InputError(f"--stitch must be cpu, same or auto, got '{stitch}'")
    if stitch == "cpu" or device.type == "cpu":
        return torch.device("cpu")
    if stitch == "same":
        return device
    voxels = int(torch.tensor(list(spatial)).prod())
    needed = 4 * voxels * (out_channels + 1)  # float32 output + MONAI's count map
    free, _ = torch.cuda.mem_get_info(device)
    chosen = torch.device("cpu") if needed > AUTO_STITCH_FRACTION * free else device
    log.debug("stitching %.2f GiB on %s", needed / 2**30, chosen)
    return chosen


@torch.inference_mode()
def sliding_predict(
    predictor: Predictor,
    image: torch.Tensor,
    roi_size: Sequence[int],
    *,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    mode: str = "gaussian",
    device: torch.device | str = "cpu",
    stitch: str = "auto",
    out_channels: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Predict a whole volume window by window with blended overlaps.

    Args:
        predictor: the model as a callable, (b, M, *roi_size) -> (b, C, *roi_size), b <= sw_batch_size.
        image: (1, M, D, H, W) float32, any size (smaller than the ROI is fine), on any device.
        roi_size: (D, H, W) window the model was trained on.
        overlap: fraction of overlap between neighbouring windows, in [0, 1).
        sw_batch_size: windows per forward pass.
        mode: "gaussian" (blend with a Gaussian importance map) or "constant" (plain average).
        device: compute device for the windows.
        stitch: where the output is accumulated: "cpu", "same" or "auto" (see `stitch_device`).
        out_channels: C, only needed by stitch "auto" to estimate memory (defaults to M).
        progress: show MONAI's window progress bar.

    Returns:
        (1, C, D, H, W) float32 on the stitch device.

    Raises:
        InputError: overlap outside [0, 1) or a non-positive batch size.
    """
    if image.ndim != 5:
        raise ValueError(f"expected image (1, M, D, H, W), got shape {tuple(image.shape)}")
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"--overlap must be in [0, 1), got {overlap}")
    if sw_batch_size < 1:
        raise InputError(f"--sw-batch-size must be at least 1, got {sw_batch_size}")
    device = torch.device(device)
    channels = out_channels if out_channels is not None else image.shape[1]
    target = stitch_device(stitch, device, channels, image.shape[2:])
    return sliding_window_inference(
        inputs=image.to("cpu", torch.float32),
        roi_size=tuple(int(s) for s in roi_size),
        sw_batch_size=sw_batch_size,
        predictor=predictor,
        overlap=overlap,
        mode=mode,
        padding_mode="replicate",
        sw_device=device,
        device=target,
        progress=progress,
    )
