"""torch.hub entry points: ``torch.hub.load("<owner>/alexnet_zoo", "alexnet", pretrained=True)``.

torch.hub puts this folder first on ``sys.path`` while it imports this file, so ``alexnet_zoo`` is the
package beside it, not an installed copy (unless the process imported one before). The entry points are
the package's builders: ``pretrained`` takes True, a tag, ``"hf-hub:org/repo"`` or a local folder or file.
"""

dependencies = ["torch", "torchvision", "numpy", "PIL", "safetensors", "huggingface_hub", "filelock", "onnx"]

from alexnet_zoo.factory import alexnet, alexnet_owt  # noqa: E402 - `dependencies` first, as hubconf files have it

__all__ = ["alexnet", "alexnet_owt"]
