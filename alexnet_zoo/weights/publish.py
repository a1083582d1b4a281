"""Publishing weights to the Hugging Face Hub: a folder in our format, plus a generated model card.

``alexnet(pretrained="hf-hub:org/name")`` reads two files, ``model.safetensors`` and ``config.json``;
``publish`` uploads exactly those two and a ``README.md`` card, in one commit. A broken upload would
only show when someone else loads it, so the folder is checked first, before any request: both files
there, ``config.json`` readable, every tensor present with the shape the architecture it names needs,
and no NaN or inf. The card is the spec's (``model_card``) when the folder holds a spec's weights,
else one generated from the folder's own ``config.json`` (``folder_model_card``). A folder whose
``config.json`` names the spec it started from but no longer fits it (fine-tuned to other classes) is
what people publish most: it gets the card from ``config.json``, which says where it started. Only
an explicit ``spec=`` that cannot describe the weights is refused: the caller asked for a card that
would be wrong.

``huggingface_hub`` does the transfer (``HfApi.create_repo`` + ``create_commit``): it owns the token
(``HF_TOKEN`` or ``hf auth login``), LFS or Xet storage and retries. Its ``ModelHubMixin`` is not used:
it pushes a model object with a ``config.json`` of its own (the constructor's arguments), where this
publishes a folder that already is our format, and it would make the model class import the Hub client.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from alexnet_zoo.errors import InvalidReference, UnknownWeights, WeightsError
from alexnet_zoo.models.alexnet import AlexNet
from alexnet_zoo.models.quantized import QuantizedAlexNet
from alexnet_zoo.weights.cards import folder_model_card, model_card
from alexnet_zoo.weights.config_file import CONFIG_FILE, WEIGHTS_FILE
from alexnet_zoo.weights.sources import validate_repo_id
from alexnet_zoo.weights.specs import WeightSpec, get_weight_spec
from alexnet_zoo.weights.store import Checkpoint, load_checkpoint

__all__ = ["check_folder", "folder_card", "publish"]

_CARD_FILE = "README.md"  # the Hub shows a repo's README.md as its model card
logger = logging.getLogger(__name__)


def check_folder(directory: str | os.PathLike) -> Checkpoint:
    """The folder's checkpoint, once it is known to load: both files present, ``config.json``
    readable, the tensors exactly those of the architecture it describes (names and shapes), all
    finite. Raises :class:`WeightsError` naming the folder and what is wrong."""
    folder = Path(directory)
    expected = f"expected a folder with {WEIGHTS_FILE} + {CONFIG_FILE} (alexnet_zoo.save_pretrained writes one)"
    if not folder.is_dir():
        raise WeightsError(f"{folder}: not a folder; {expected}")
    missing = [name for name in (WEIGHTS_FILE, CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise WeightsError(f"{folder}: {' and '.join(missing)} missing; {expected}")
    try:
        checkpoint = load_checkpoint(folder)
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            shapes = {k: tuple(v.shape) for k, v in AlexNet(checkpoint.config).state_dict().items()}
    except (ValueError, KeyError, TypeError) as err:  # a config.json entry the config classes refuse
        raise WeightsError(f"{folder / CONFIG_FILE}: not an alexnet_zoo config.json ({err})") from err
    state = checkpoint.state_dict
    if checkpoint.meta.get("precision") == "int8":  # names, dtypes and every value, as loading checks them
        QuantizedAlexNet(checkpoint.config, state, arch=checkpoint.arch, where=str(folder / WEIGHTS_FILE))
        return checkpoint
    problems = [f"{k} missing" for k in shapes if k not in state]
    problems += [f"{k} unexpected" for k in state if k not in shapes]
    problems += [f"{k} is {tuple(state[k].shape)}, expected {shape}" for k, shape in shapes.items()
                 if k in state and tuple(state[k].shape) != shape]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise WeightsError(f"{folder / WEIGHTS_FILE} does not fit the {checkpoint.arch} its {CONFIG_FILE} "
                           f"describes: {'; '.join(problems[:5])}{more}")
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise WeightsError(f"{folder / WEIGHTS_FILE}: NaN or inf values in {', '.join(broken)}")
    return checkpoint


def folder_card(directory: str | os.PathLike, repo_id: str, *, spec: WeightSpec | str | None = None) -> str:
    """The README.md ``publish`` would upload for ``directory`` (checked first, as ``publish`` does)."""
    return _prepare(Path(directory), _repo(repo_id), spec)[1]


def publish(directory: str | os.PathLike, repo_id: str, *, spec: WeightSpec | str | None = None,
            revision: str | None = None, private: bool = False, commit_message: str | None = None) -> str:
    """Upload ``directory`` (our format) to the Hub model repo ``repo_id`` ("org/name") with a model
    card, creating the repo (``private`` applies only then) and the ``revision`` branch if needed.

    ``spec`` (a :class:`WeightSpec` or its name) picks the spec's card; by default the spec that
    ``config.json`` names, if any, else a card from ``config.json`` itself. Returns the commit's URL
    (its last segment is the commit id); publishing unchanged files again makes no new commit and
    returns the current one."""
    from huggingface_hub import CommitOperationAdd, HfApi

    folder, repo_id = Path(directory), _repo(repo_id)
    checkpoint, card, spec = _prepare(folder, repo_id, spec)  # every check before the first request
    name = spec.name if spec else f"{checkpoint.arch} ({checkpoint.config.num_classes} classes)"
    operations = [CommitOperationAdd(WEIGHTS_FILE, str(folder / WEIGHTS_FILE)),
                  CommitOperationAdd(CONFIG_FILE, str(folder / CONFIG_FILE)),
                  CommitOperationAdd(_CARD_FILE, card.encode())]
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    try:
        api.create_repo(repo_id, private=True if private else None, exist_ok=True)  # None: the account's default
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=commit_message or f"Upload {name} weights",
                                 revision=revision)
    except (OSError, RuntimeError) as err:  # HfHubHTTPError and transport errors are OSErrors; RuntimeError: LFS
        raise WeightsError(f"hf-hub:{repo_id}: publishing {folder} failed: {err}{_hint(err)}") from err
    return info.commit_url


def _prepare(folder: Path, repo_id: str, spec: WeightSpec | str | None) -> tuple[Checkpoint, str, WeightSpec | None]:
    checkpoint = check_folder(folder)
    spec = _spec_for(folder, checkpoint, spec)
    if spec is not None:
        return checkpoint, model_card(spec, repo_id), spec
    num_params = sum(v.numel() for v in checkpoint.state_dict.values())
    return checkpoint, folder_model_card(checkpoint.meta, repo_id, num_params=num_params), None


def _spec_for(folder: Path, checkpoint: Checkpoint, spec: WeightSpec | str | None) -> WeightSpec | None:
    """The spec whose card describes these weights, refusing one that cannot be them."""
    named = (checkpoint.meta.get("weights") or {}).get("name")
    explicit = spec is not None
    if isinstance(spec, str):
        spec = get_weight_spec(spec)  # UnknownWeights (a WeightsError) lists the known names
    if spec is None:
        if not isinstance(named, str):
            return None
        try:
            spec = get_weight_spec(named)
        except UnknownWeights:  # a spec this version does not know: the card comes from config.json's own entry
            return None
    elif named is not None and named != spec.name:
        raise WeightsError(f"{folder / CONFIG_FILE} names the weights {named!r}, not {spec.name!r}")
    num_params = sum(v.numel() for v in checkpoint.state_dict.values())
    differs = [f"{k}={getattr(checkpoint.config, k)!r} (the spec has {v!r})" for k, v in spec.config.items()
               if getattr(checkpoint.config, k) != v]
    if spec.arch != checkpoint.arch or num_params != spec.num_params or differs:
        found = f"{checkpoint.arch} with {num_params:,} parameters" + (f", {', '.join(differs)}" if differs else "")
        if not explicit:  # started from the spec, changed since (fine-tuned): describe what is there
            logger.info("%s: holds %s, no longer %s: the card comes from %s", folder, found, spec.name, CONFIG_FILE)
            return None
        raise WeightsError(f"{folder}: holds {found}; {spec.name} is {spec.arch} with {spec.num_params:,}, so its "
                           f"card would describe other weights (leave the spec out for a card from {CONFIG_FILE})")
    return spec


def _repo(repo_id: str) -> str:
    repo_id = repo_id.removeprefix("hf-hub:")
    try:
        return validate_repo_id(repo_id)
    except InvalidReference as err:
        raise InvalidReference(f"{err} (expected 'org/name', a Hugging Face Hub model repo)") from None


def _hint(err: BaseException) -> str:
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403):
        return " (writing needs a token with write access: `hf auth login`, or HF_TOKEN)"
    if "xet" in str(err).lower():
        return " (if this endpoint has no Xet storage, HF_HUB_DISABLE_XET=1 uploads through plain LFS)"
    return ""
