"""OpenMMLab (mmsegmentation 1.x, mmdetection 3.x on mmengine) integration: `import
zoo.integrations.mm` registers the zoo's backbones and the layer-wise lr decay constructor.

`import zoo` never imports this module (mm* is the optional `mm` extra: `make test-mm`).

* `UniRepLKNetBackbone`: the official seg/det backbone's name and constructor arguments
  (AILab-CVC/UniRepLKNet `segmentation/mmseg_custom/...`), plus `out_indices`,
  `frozen_stages` and `norm_eval`. Returns a tuple of NCHW maps (strides 4, 8, 16, 32), each
  through its own channels-first LayerNorm `norm{i}` as the official backbone does. The network
  is the zoo's `UniRepLKNet` (its stem and stages; keys `stem.*`, `stages.i.downsample.*`,
  `stages.i.blocks.j.*`, `norm{i}.*`); official-layout weights (`downsample_layers.*`,
  `stages.i.j.*`) are renamed on load, whichever way they come (init_cfg, `load_from`, a test
  checkpoint).
* `InceptionNeXtBackbone`: the same for the zoo's `InceptionNeXt` (the official repo has no
  seg/det code); per the authors (sail-sg/inceptionnext issues #10/#11) each stage output gets its
  own BatchNorm (`norm{i}`), which the runner turns into SyncBN with `sync_bn='torch'`.
* Weights: `init_cfg=dict(type='Pretrained', checkpoint=PATH, prefix=...)` loads an ImageNet
  classification checkpoint (head and final norm dropped, `norm{i}` keep their init) or a
  seg/det checkpoint (`backbone.*` under `state_dict`; the prefix is found when not given), read
  with `torch.load(weights_only=True)`; a checkpoint that does not fit raises `CheckpointError`
  naming the keys. `deploy=True` builds the re-parameterised form (a training-form checkpoint is
  converted while loading); `backbone.reparameterize()` converts in place.
* mmengine 0.10.7 loads local checkpoints with a bare `torch.load`, which torch >= 2.6 runs
  weights-only, and its own Runner checkpoints then fail (numpy arrays, `HistoryBuffer`:
  open-mmlab/mmengine#1655). The local scheme is replaced by a weights-only loader that allows
  exactly those types (`MM_SAFE_GLOBALS`), so `resume` and `load_from` work and nothing in a
  checkpoint can run code.
* `UniRepLKNetLearningRateDecayOptimizerConstructor` (the official name): layer-wise or
  stage-wise lr decay for both backbones, with the official layer-id map (mmseg's stock
  constructor only recognises ConvNeXt parameter names).
"""

from __future__ import annotations

import inspect
import os
import pickle
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from mmengine.logging import HistoryBuffer, print_log
from mmengine.model import BaseModule
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_CONSTRUCTORS
from mmengine.runner.checkpoint import CheckpointLoader
from timm.layers import LayerNorm2d
from torch import Tensor

from ..checkpoint import read_checkpoint
from ..errors import CheckpointError, ConfigError, first_few
from ..layers.input_check import check_in_chans
from ..models.inceptionnext import InceptionNeXt, check_input_size
from ..models.unireplknet import UniRepLKNet, _form, _official_to_timm_key
from ..reparam import reparameterize

__all__ = [
    "MM_SAFE_GLOBALS",
    "InceptionNeXtBackbone",
    "UniRepLKNetBackbone",
    "UniRepLKNetLearningRateDecayOptimizerConstructor",
    "check_config_paths",
    "load_local_checkpoint",
    "register",
]


# --------------------------------------------------------------------------------------------
# weights-only loading of mmengine checkpoints


def _history_buffer_method(owner: Any, name: str) -> Any:
    """`getattr` as the unpickler may call it: only HistoryBuffer's public methods.

    `HistoryBuffer.__getstate__` stores its statistics methods (`min`, `max`, `mean`,
    `current`, ...), which pickle writes as `getattr(HistoryBuffer, 'min')`; any other getattr in
    a checkpoint is refused.
    """
    if (
        owner is HistoryBuffer
        and not name.startswith("_")
        and inspect.isfunction(inspect.getattr_static(owner, name, None))
    ):
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f"refused getattr({getattr(owner, '__name__', owner)!r}, {name!r}): only "
        "HistoryBuffer's statistics methods may be looked up"
    )


def _numpy_globals() -> list[Any]:
    # what numpy arrays, scalars and dtypes pickle as (torch's documented numpy allow-list)
    dtype_classes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDGSUV"}
    return [
        np._core.multiarray._reconstruct,
        np._core.multiarray.scalar,
        np.ndarray,
        np.dtype,
        *sorted(dtype_classes, key=lambda c: c.__name__),
    ]


# Everything mmengine 0.10.7 / mmseg / mmdet Runner checkpoints hold besides tensors and plain
# containers: the numpy values in `meta` and `message_hub`, the HistoryBuffers of the message hub
# and their statistics methods.
MM_SAFE_GLOBALS: list[Any] = [
    *_numpy_globals(),
    HistoryBuffer,
    (_history_buffer_method, "builtins.getattr"),
]


def load_local_checkpoint(filename: str, map_location: Any = None) -> Any:
    """mmengine's local-file checkpoint scheme, weights-only (`MM_SAFE_GLOBALS` allowed).

    Raises `CheckpointError` naming the path for a missing file or one that pickles anything
    else (which would need code to run).
    """
    return read_checkpoint(
        os.path.expanduser(filename),
        safe_globals=MM_SAFE_GLOBALS,
        map_location=map_location or "cpu",
    )


# --------------------------------------------------------------------------------------------
# backbones


def _as_batchnorm2d(module: nn.Module) -> None:
    """Replace SyncBN / mmengine's `_BatchNormXd` children by `nn.BatchNorm2d` (same state), so
    the zoo's BN folding, which looks for BatchNorm2d, sees them."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and type(child) is not (
            nn.BatchNorm2d
        ):
            bn = nn.BatchNorm2d(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
                device=child.weight.device if child.affine else None,
                dtype=child.weight.dtype if child.affine else None,
            )
            bn.load_state_dict(child.state_dict())
            bn.train(child.training)
            setattr(module, name, bn)
        else:
            _as_batchnorm2d(child)


def _check_out_indices(out_indices: Sequence[int], num_stages: int = 4) -> tuple[int, ...]:
    if isinstance(out_indices, int):
        out_indices = (out_indices,)
    out = tuple(out_indices)
    bad = [i for i in out if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < 4]
    if not out or bad or len(set(out)) != len(out):
        raise ConfigError(
            f"out_indices={tuple(out_indices)!r} is invalid: expected distinct stage indices in "
            f"0..{num_stages - 1} (0: stride 4 ... 3: stride 32)"
            + (f"; out of range: {bad}" if bad else "")
        )
    return tuple(sorted(out))


class _StageBackbone(BaseModule):
    """Stem + 4 stages taken from a zoo classifier, one output norm per stage, mm semantics.

    frozen_stages: -1 nothing frozen; 0 the stem; k >= 1 the stem and stages 0..k-1 (each with
    its downsample and its output norm), kept in eval mode with requires_grad False.
    norm_eval: keep the BatchNorms of the network in eval mode while training.
    """

    # checkpoint keys of the classifier (head, final norm) that a backbone drops
    _classifier_prefixes: tuple[str, ...] = ("head.",)

    def __init__(
        self,
        net: nn.Module,
        dims: Sequence[int],
        out_norm: Any,
        out_indices: Sequence[int],
        frozen_stages: int,
        norm_eval: bool,
        with_cp: bool,
        init_cfg: dict | list | None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.out_indices = _check_out_indices(out_indices)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= 4:
            raise ConfigError(
                f"frozen_stages={frozen_stages!r} is invalid: expected -1 (none), 0 (stem) or "
                "1..4 (the stem and that many stages)"
            )
        self.frozen_stages = frozen_stages
        self.norm_eval = bool(norm_eval)
        self.in_chans = 3
        self.dims = tuple(int(d) for d in dims)
        self.stem = net.stem
        self.stages = net.stages
        if with_cp:
            net.set_grad_checkpointing(True)
        for i, dim in enumerate(self.dims):
            self.add_module(f"norm{i}", out_norm(dim))
        self._freeze_stages()

    # -- forward ---------------------------------------------------------------------------
    def _input(self, x: Tensor) -> Tensor:
        check_in_chans(self, x)
        return x

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = self.stem(self._input(x))
        outs = []
        for i, stage in enumerate(self.stages[: self.out_indices[-1] + 1]):
            x = stage(x)
            if i in self.out_indices:
                outs.append(getattr(self, f"norm{i}")(x))
        return tuple(outs)

    # -- training modes ----------------------------------------------------------------------
    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        frozen: list[nn.Module] = [self.stem]
        for i in range(self.frozen_stages):
            frozen += [self.stages[i], getattr(self, f"norm{i}")]
        return frozen

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> _StageBackbone:
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    # -- deploy form -------------------------------------------------------------------------
    def reparameterize(self) -> _StageBackbone:
        """Convert in place to the deploy form (the zoo's `reparameterize`); SyncBN layers that
        mm put in are turned back into BatchNorm2d first so they fold too."""
        _as_batchnorm2d(self)
        reparameterize(self.stages)
        reparameterize(self.stem)
        return self

    # -- weights -----------------------------------------------------------------------------
    def _to_zoo_layout(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Family-specific: official key names -> this module's."""
        return state_dict

    def _build(self, deploy: bool) -> _StageBackbone:
        """The same backbone in the given form (random weights)."""
        return type(self)(**self._build_args, deploy=deploy)

    def _fit_form(self, state_dict: dict[str, Tensor], path: str) -> dict[str, Tensor]:
        """A training-form checkpoint for a deploy=True backbone is loaded into a training twin
        and re-parameterised; a deploy-form one for a training backbone is an error."""
        if not any(_mismatch(state_dict, self.state_dict())):
            return state_dict
        twin = self._build(deploy=not self.deploy)
        if any(_mismatch(state_dict, twin.state_dict())):
            return state_dict  # fits neither form: _check_fits names the keys
        if not self.deploy:
            raise CheckpointError(
                f"checkpoint {path} holds the deploy (re-parameterised) form but "
                f"{self._describe()} is built in the training form: set deploy=True"
            )
        twin.eval()
        twin._check_fits(state_dict, path)
        twin.load_state_dict(state_dict, strict=False)
        twin.reparameterize()
        return {k: v for k, v in twin.state_dict().items() if not _is_new_out_norm(k, state_dict)}

    def init_weights(self) -> None:
        pretrained = [
            cfg
            for cfg in (self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg])
            if isinstance(cfg, dict) and cfg.get("type") == "Pretrained"
        ]
        if not pretrained:
            super().init_weights()
            return
        others = [c for c in _as_list(self.init_cfg) if c not in pretrained]
        self.init_cfg = others or None
        super().init_weights()  # any other initialisers first, as mmengine orders them
        cfg = pretrained[-1]
        self.load_checkpoint(cfg.get("checkpoint"), prefix=cfg.get("prefix"))
        self.init_cfg = _as_list(others) + pretrained
        self._is_init = True

    def load_checkpoint(self, path: str | None, prefix: str | None = None) -> None:
        """Load an ImageNet (classifier) or a seg/det (`backbone.*`) checkpoint into this
        backbone; `CheckpointError` naming the keys when it does not fit."""
        if path is None:  # the official configs' `checkpoint=None`: keep the initialisation
            print_log(f"{type(self).__name__}: init_cfg has no checkpoint; random initialisation")
            return
        path = str(path)
        checkpoint = load_local_checkpoint(path, map_location="cpu")
        state_dict = checkpoint
        if isinstance(state_dict, dict):
            for wrapper in ("state_dict", "model"):
                if isinstance(state_dict.get(wrapper), dict):
                    state_dict = state_dict[wrapper]
                    break
        if not isinstance(state_dict, dict) or not all(
            isinstance(v, Tensor) for v in state_dict.values()
        ):
            raise CheckpointError(f"not a valid checkpoint: {path} (no state_dict of tensors)")
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
        state_dict = self._select_prefix(state_dict, prefix, path)
        state_dict = self._to_zoo_layout(state_dict)
        state_dict = {
            k: v for k, v in state_dict.items() if not k.startswith(self._classifier_prefixes)
        }
        state_dict = self._fit_form(state_dict, path)
        self._check_fits(state_dict, path)
        self.load_state_dict(state_dict, strict=False)
        kept = sorted({k.split(".")[0] for k in self.state_dict() if k not in state_dict})
        print_log(
            f"{type(self).__name__}: loaded {len(state_dict)} tensors from {path}"
            + (f"; kept the initial {', '.join(kept)}" if kept else "")
        )

    def _select_prefix(
        self, state_dict: dict[str, Tensor], prefix: str | None, path: str
    ) -> dict[str, Tensor]:
        if not prefix:
            own = {k.split(".")[0] for k in self.state_dict()}
            if any(
                k.split(".")[0] in own or k.startswith("downsample_layers.") for k in state_dict
            ):
                return state_dict
            if not any(k.startswith("backbone.") for k in state_dict):
                return state_dict  # no backbone here: _check_fits names the keys
            prefix = "backbone."  # a whole segmentor/detector: take its backbone
        prefix = prefix if prefix.endswith(".") else prefix + "."
        picked = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not picked:
            tops = sorted({k.split(".")[0] + "." for k in state_dict})
            raise CheckpointError(
                f"no key of {path} starts with prefix={prefix!r}; its keys start with "
                f"{first_few(tops)}"
            )
        return picked

    def _check_fits(self, state_dict: dict[str, Tensor], path: str) -> None:
        expected = self.state_dict()
        missing, unexpected = _mismatch(state_dict, expected)
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint {path} does not fit {self._describe()}: {len(missing)} missing keys"
                f" ({first_few(missing, 3)}), {len(unexpected)} unexpected keys "
                f"({first_few(unexpected, 3)}); is it a checkpoint of another backbone or size?"
            )
        wrong = [
            f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
            for k, v in state_dict.items()
            if v.shape != expected[k].shape
        ]
        if wrong:
            raise CheckpointError(
                f"checkpoint {path} does not fit {self._describe()}: {len(wrong)} tensors have "
                f"another shape (checkpoint vs model: {first_few(wrong, 3)}); another size?"
            )

    def _describe(self) -> str:
        return f"{type(self).__name__}(dims={self.dims})"


_OUT_NORMS = tuple(f"norm{i}." for i in range(4))


def _is_new_out_norm(key: str, state_dict: dict[str, Tensor]) -> bool:
    """An output-norm key the checkpoint has none of (ImageNet checkpoints): it keeps its
    initialisation, as in the official backbone."""
    return key.startswith(_OUT_NORMS) and not any(k.startswith(_OUT_NORMS) for k in state_dict)


def _mismatch(
    state_dict: dict[str, Tensor], expected: dict[str, Tensor]
) -> tuple[list[str], list[str]]:
    """(missing, unexpected) keys of a checkpoint in a module's layout; BatchNorm counters and
    output norms a checkpoint has none of are not missing."""
    missing = [
        k
        for k in expected
        if k not in state_dict
        and not k.endswith(".num_batches_tracked")
        and not _is_new_out_norm(k, state_dict)
    ]
    return missing, [k for k in state_dict if k not in expected]


def _as_list(cfg: Any) -> list:
    if cfg is None:
        return []
    return list(cfg) if isinstance(cfg, list) else [cfg]


class UniRepLKNetBackbone(_StageBackbone):
    """UniRepLKNet for mmseg / mmdet, with the official backbone's arguments and outputs.

    Args (official): depths, dims, drop_path_rate, layer_scale_init_value, kernel_sizes (None:
        the default for depths), deploy, with_cp (gradient checkpointing per block), init_cfg,
        attempt_use_lk_impl (accepted and ignored: the zoo's depthwise op picks its backend).
    Args (mm conventions): out_indices (subset of 0..3), frozen_stages, norm_eval.
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 27, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        kernel_sizes: Sequence[Sequence[int]] | None = None,
        deploy: bool = False,
        with_cp: bool = False,
        init_cfg: dict | list | None = None,
        attempt_use_lk_impl: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ) -> None:
        del attempt_use_lk_impl  # the official iGEMM switch; ops.dwconv2d chooses the backend
        self._net_args = dict(
            depths=tuple(depths),
            dims=tuple(dims),
            drop_path_rate=drop_path_rate,
            layer_scale_init_value=layer_scale_init_value,
            kernel_sizes=kernel_sizes,
        )
        self.deploy = bool(deploy)
        self._build_args = dict(
            self._net_args, with_cp=with_cp, out_indices=out_indices, frozen_stages=frozen_stages
        )
        net = UniRepLKNet(num_classes=0, deploy=self.deploy, **self._net_args)
        super().__init__(
            net,
            dims,
            lambda dim: LayerNorm2d(dim, eps=1e-6),
            out_indices,
            frozen_stages,
            norm_eval,
            with_cp,
            init_cfg,
        )
        # official-layout weights loaded into a parent (load_from, a test checkpoint)
        self.register_load_state_dict_pre_hook(_rename_official_keys)

    def _to_zoo_layout(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        return _official_to_zoo(state_dict)

    def _describe(self) -> str:
        a = self._net_args
        form = ", deploy=True" if self.deploy else ""
        return f"UniRepLKNetBackbone(depths={a['depths']}, dims={a['dims']}{form})"


def _official_to_zoo(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official UniRepLKNet keys (`downsample_layers.*`, `stages.i.j.*`) -> the zoo's; GRN
    weights (1, 1, 1, D) -> (D,). Keys already in the zoo layout pass through."""
    if "downsample_layers.0.0.weight" not in state_dict:
        return state_dict
    out = {}
    for key, value in state_dict.items():
        new = _official_to_timm_key(key, state_dict)
        out[new] = value.reshape(-1) if ".grn." in new and value.dim() == 4 else value
    return out


def _rename_official_keys(
    module: UniRepLKNetBackbone, state_dict: dict, prefix: str, *args: Any
) -> None:
    if f"{prefix}downsample_layers.0.0.weight" not in state_dict:
        return
    mine = {k: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(prefix)]}
    local = {k[len(prefix) :]: v for k, v in mine.items()}
    ckpt_form, model_form = (
        _form(list(_official_to_zoo(local))),
        _form(list(module.state_dict())),
    )
    if ckpt_form is not None and model_form is not None and ckpt_form != model_form:
        raise CheckpointError(
            f"the {ckpt_form}-form UniRepLKNet weights under {prefix!r} do not load into a "
            f"{model_form}-form backbone; "
            + ("set deploy=True" if ckpt_form == "deploy" else "set deploy=False")
        )
    for key, value in _official_to_zoo(local).items():
        state_dict[prefix + key] = value


class InceptionNeXtBackbone(_StageBackbone):
    """InceptionNeXt for mmseg / mmdet: stage outputs (strides 4/8/16/32), each through its own
    BatchNorm `norm{i}` (the authors' recipe; SyncBN under `sync_bn='torch'`).

    Args: depths, dims, drop_path_rate, ls_init_value, mlp_ratios, band_kernel_size,
        branch_ratio (the zoo's InceptionNeXt), deploy, with_cp, init_cfg, out_indices,
        frozen_stages, norm_eval. The default is InceptionNeXt-T.
    """

    def __init__(
        self,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        drop_path_rate: float = 0.0,
        ls_init_value: float = 1e-6,
        mlp_ratios: float | Sequence[float] = (4, 4, 4, 3),
        band_kernel_size: int = 11,
        branch_ratio: float = 0.125,
        deploy: bool = False,
        with_cp: bool = False,
        init_cfg: dict | list | None = None,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ) -> None:
        self.deploy = bool(deploy)
        self._build_args = dict(
            depths=depths,
            dims=dims,
            drop_path_rate=drop_path_rate,
            ls_init_value=ls_init_value,
            mlp_ratios=mlp_ratios,
            band_kernel_size=band_kernel_size,
            branch_ratio=branch_ratio,
            with_cp=with_cp,
            out_indices=out_indices,
            frozen_stages=frozen_stages,
        )
        net = InceptionNeXt(
            num_classes=0,
            depths=tuple(depths),
            dims=tuple(dims),
            drop_path_rate=drop_path_rate,
            ls_init_value=ls_init_value,
            mlp_ratios=tuple(mlp_ratios) if isinstance(mlp_ratios, Sequence) else mlp_ratios,
            band_kernel_size=band_kernel_size,
            branch_ratio=branch_ratio,
            deploy=self.deploy,
        )
        self.channels_last = net.channels_last
        super().__init__(
            net, dims, nn.BatchNorm2d, out_indices, frozen_stages, norm_eval, with_cp, init_cfg
        )

    def _input(self, x: Tensor) -> Tensor:
        x = check_input_size(super()._input(x))
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


# --------------------------------------------------------------------------------------------
# layer-wise lr decay


_DOWNSAMPLE = re.compile(r"^backbone\.stages\.(\d+)\.downsample\.")
_BLOCK = re.compile(r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.")


def layer_id(name: str, num_layers: int) -> int:
    """The official layer id of a parameter (ConvNeXt's map, as the UniRepLKNet constructor):
    stem 0; downsample of stage 1, 2, 3 -> 2, 3, num_layers; stage 0 blocks 1, stage 1 blocks
    2, stage 2 block b 3 + b // 3, stage 3 num_layers; everything else (output norms, neck,
    heads) num_layers + 1."""
    if name.startswith("backbone.stem."):
        return 0
    if match := _DOWNSAMPLE.match(name):
        return {1: 2, 2: 3}.get(int(match[1]), num_layers)
    if match := _BLOCK.match(name):
        stage, block = int(match[1]), int(match[2])
        return {0: 1, 1: 2, 2: 3 + block // 3}.get(stage, num_layers)
    return num_layers + 1


def stage_id(name: str, num_stages: int) -> int:
    """The official stage id: stem and downsamples 0, stage i's blocks i + 1, the rest
    num_stages - 1."""
    if name.startswith("backbone.stem.") or _DOWNSAMPLE.match(name):
        return 0
    if match := _BLOCK.match(name):
        return int(match[1]) + 1
    return num_stages - 1


class UniRepLKNetLearningRateDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Layer-wise (or stage-wise) lr decay for the zoo backbones, as the official recipes.

    paramwise_cfg: `decay_rate` (lr scale per layer), `num_layers` (the deepest backbone layer
    id), `decay_type` ('layer_wise' or 'stage_wise'). A parameter with layer id L gets lr
    `base_lr * decay_rate ** (num_layers + 1 - L)` (stage-wise: the stage id, with num_layers + 2
    stages); 1-D parameters and biases get no weight decay. Works for any backbone whose
    parameters are named `stem.*` / `stages.i.downsample.*` / `stages.i.blocks.j.*`.
    """

    def add_params(self, params: list[dict], module: nn.Module, **kwargs: Any) -> None:
        cfg = dict(self.paramwise_cfg)
        unknown = set(cfg) - {"decay_rate", "decay_type", "num_layers"}
        if unknown:
            raise ConfigError(
                f"unknown paramwise_cfg keys for {type(self).__name__}: {sorted(unknown)} "
                "(expected decay_rate, decay_type, num_layers)"
            )
        num_layers = cfg.get("num_layers")
        decay_rate = cfg.get("decay_rate")
        decay_type = cfg.get("decay_type", "layer_wise")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ConfigError(
                f"paramwise_cfg.num_layers must be a positive int, got {num_layers!r}"
            )
        if not isinstance(decay_rate, (int, float)) or not 0 < decay_rate <= 1:
            raise ConfigError(f"paramwise_cfg.decay_rate must be in (0, 1], got {decay_rate!r}")
        if decay_type not in ("layer_wise", "stage_wise"):
            raise ConfigError(
                f"paramwise_cfg.decay_type must be 'layer_wise' or 'stage_wise', got {decay_type!r}"
            )
        names = [n for n, p in module.named_parameters() if p.requires_grad]
        if not any(_BLOCK.match(n) for n in names):
            raise ConfigError(
                f"{type(self).__name__} found no backbone.stages.<i>.blocks.<j> parameters in "
                f"{type(module).__name__} (first: {first_few(names, 3)}); it is meant for the "
                "zoo backbones (UniRepLKNetBackbone, InceptionNeXtBackbone)"
            )
        depth = num_layers + 2
        groups: dict[str, dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = param.ndim == 1 or name.endswith(".bias")
            if decay_type == "layer_wise":
                lid = layer_id(name, num_layers)
            else:
                lid = stage_id(name, depth)
            key = f"layer_{lid}_{'no_decay' if no_decay else 'decay'}"
            if key not in groups:
                scale = decay_rate ** (depth - lid - 1)
                groups[key] = {
                    "params": [],
                    "param_names": [],
                    "lr": scale * self.base_lr,
                    "lr_scale": scale,
                    "weight_decay": 0.0 if no_decay else self.base_wd,
                    "group_name": key,
                }
            groups[key]["params"].append(param)
            groups[key]["param_names"].append(name)
        print_log(
            f"{type(self).__name__}: {decay_type} decay_rate={decay_rate} num_layers={num_layers}"
            f": {len(groups)} parameter groups"
        )
        params.extend(groups.values())


# --------------------------------------------------------------------------------------------
# config checks for tools/mm_train.py and tools/mm_test.py

# what each dataset type expects under data_root
DATASET_LAYOUTS = {
    "ADE20KDataset": (
        "ADEChallengeData2016/ with images/{training,validation}/*.jpg and "
        "annotations/{training,validation}/*.png (label maps, 0 = other), as unpacked from "
        "ADEChallengeData2016.zip"
    ),
    "CocoDataset": (
        "coco/ with train2017/*.jpg, val2017/*.jpg and annotations/instances_{train,val}2017.json"
    ),
}


def _datasets(cfg: Any) -> list[dict]:
    """The innermost dataset dicts of a dataloader cfg (through Repeat/Concat wrappers)."""
    found = []
    todo = [cfg.get("dataset")] if cfg else []
    while todo:
        ds = todo.pop()
        if isinstance(ds, list):
            todo += ds
        elif isinstance(ds, dict):
            inner = ds.get("dataset", ds.get("datasets"))
            if inner is not None:
                todo.append(inner)
            else:
                found.append(ds)
    return found


def check_config_paths(cfg: Any, loaders: Sequence[str], pretrained: bool = True) -> None:
    """Raise `ConfigError` naming the first missing dataset folder or annotation file of the
    given dataloaders ('train_dataloader', ...) with the layout that dataset type expects, and
    (pretrained=True) a missing `init_cfg` checkpoint of the backbone."""
    osp = os.path
    for loader in loaders:
        for ds in _datasets(cfg.get(loader)):
            root = ds.get("data_root") or ""
            paths = [("data_root", root)] if root else []
            prefix = ds.get("data_prefix") or {}
            paths += [(f"data_prefix.{k}", osp.join(root, v)) for k, v in prefix.items() if v]
            if ds.get("ann_file"):
                paths.append(("ann_file", osp.join(root, ds["ann_file"])))
            for what, path in paths:
                if not osp.exists(path):
                    layout = DATASET_LAYOUTS.get(ds.get("type"), "")
                    raise ConfigError(
                        f"{loader}: the {ds.get('type', 'dataset')} {what} {path!r} does not exist"
                        + (f"; expected data_root={root or '.'!r} to be {layout}" if layout else "")
                        + f"; set it with --cfg-options {loader}.dataset.data_root=PATH"
                    )
    for loader in loaders:
        evaluators = cfg.get(loader.replace("_dataloader", "_evaluator"))
        for ev in _as_list(evaluators):
            path = ev.get("ann_file") if isinstance(ev, dict) else None
            if path and not osp.isfile(path):
                key = loader.replace("_dataloader", "_evaluator")
                raise ConfigError(
                    f"{key}: ann_file {path!r} does not exist; set it with --cfg-options "
                    f"{key}.ann_file=PATH"
                )
    backbone = (cfg.get("model") or {}).get("backbone") or {}
    for init in _as_list(backbone.get("init_cfg")) if pretrained else []:
        path = init.get("checkpoint") if init.get("type") == "Pretrained" else None
        if isinstance(path, str) and "://" not in path and not osp.isfile(path):
            raise ConfigError(
                f"model.backbone.init_cfg.checkpoint {path!r} does not exist: download the "
                "ImageNet checkpoint there, or train from scratch with --cfg-options "
                "model.backbone.init_cfg.checkpoint=None"
            )


# --------------------------------------------------------------------------------------------
# registration

_BACKBONES = (UniRepLKNetBackbone, InceptionNeXtBackbone)


def register() -> list[str]:
    """Register the backbones into mmseg's and mmdet's MODELS (whichever is installed), the
    constructor into mmengine's (and their) optimizer-wrapper constructors, and the weights-only
    local checkpoint loader. Idempotent; returns the packages registered into."""
    CheckpointLoader.register_scheme(prefixes="", loader=load_local_checkpoint, force=True)
    MMENGINE_CONSTRUCTORS.register_module(
        module=UniRepLKNetLearningRateDecayOptimizerConstructor, force=True
    )
    done = []
    for package in ("mmseg", "mmdet"):
        try:
            registry = __import__(f"{package}.registry", fromlist=["MODELS"])
        except ImportError:
            continue
        for cls in _BACKBONES:
            registry.MODELS.register_module(module=cls, force=True)
        registry.OPTIM_WRAPPER_CONSTRUCTORS.register_module(
            module=UniRepLKNetLearningRateDecayOptimizerConstructor, force=True
        )
        done.append(package)
    if not done:
        raise ImportError(
            "zoo.integrations.mm needs mmsegmentation 1.x and/or mmdet 3.x (with mmcv 2.1.0): "
            "run `make test-mm` or see README 'OpenMMLab'"
        )
    return done


REGISTERED_INTO = register()
