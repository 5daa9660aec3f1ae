"""CPU or GPU, chosen in one place.

Nothing here imports torch, faiss or onnxruntime at module import time: each
check imports its library lazily, so importing `recs.device` stays cheap and
works on a deployment that only has onnxruntime + faiss + numpy.
"""

from __future__ import annotations

import functools
import glob
import os

__all__ = ["faiss_has_gpu", "nvidia_device_present", "onnx_disabled_optimizers", "onnx_providers", "torch_device"]

_CUDA_EP = "CUDAExecutionProvider"
_CPU_EP = "CPUExecutionProvider"
# onnxruntime's session-time fusion of Add + LayerNormalization into SkipLayerNormalization: its
# CPU kernel took ~2.2 ms where Add + LayerNormalization took ~0.55 ms (MiniLM, 64 x 32 tokens,
# onnxruntime 1.32, 2-core AVX-512 CPU); without it the int8 graphs ran 13-20% faster and the fused
# fp32 graph 4-9% (batch 1 to 64). CUDA's SkipLayerNormalization is its fast path: kept there.
_CPU_SLOW_FUSIONS = ("SkipLayerNormFusion",)


def torch_device() -> str:
    """`"cuda"` when torch sees a CUDA device, else `"cpu"` (torch imported lazily)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def faiss_has_gpu() -> bool:
    """True when the installed faiss is a GPU build and sees at least one GPU. Never raises.

    Cached for the process; `faiss_has_gpu.cache_clear()` re-checks.
    """
    try:
        import faiss
    except Exception:
        return False
    if not hasattr(faiss, "StandardGpuResources") or not hasattr(faiss, "index_cpu_to_gpu"):
        return False  # faiss-cpu: get_num_gpus() exists but always says 0
    try:
        return int(faiss.get_num_gpus()) > 0
    except Exception:
        return False


def nvidia_device_present() -> bool:
    """An NVIDIA device node exists and CUDA_VISIBLE_DEVICES does not hide every GPU.

    A torch- and faiss-free check (no nvidia-smi subprocess).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def onnx_providers(prefer_gpu: bool = True) -> list[str]:
    """onnxruntime execution providers, best first; `CPUExecutionProvider` is always last.

    CUDA is listed only when `prefer_gpu`, onnxruntime offers it, and a GPU is present.
    """
    providers: list[str] = []
    if prefer_gpu:
        try:
            import onnxruntime

            available = set(onnxruntime.get_available_providers())
        except Exception:
            available = set()
        if _CUDA_EP in available and nvidia_device_present():
            providers.append(_CUDA_EP)
    providers.append(_CPU_EP)
    return providers


def onnx_disabled_optimizers(providers: list[str]) -> list[str]:
    """The onnxruntime graph optimisers a session over `providers` turns off: the fusions whose
    CPU kernels are slower than the operators they replace, on a session that runs on CPU only."""
    return [] if _CUDA_EP in providers else list(_CPU_SLOW_FUSIONS)
