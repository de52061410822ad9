"""Evaluate a checkpoint with an mmsegmentation 1.x / mmdetection 3.x config, the zoo's
backbones registered.

    python tools/mm_test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]

As mmseg's and mmdet's own `tools/test.py`: the checkpoint is loaded with `load_from` (read
weights-only; an official UniRepLKNet seg/det checkpoint loads too, its keys are renamed), the
test dataloader and evaluator of the config run, metrics are printed and logged under the work
directory (default ./work_dirs/<config name>). The backbone's ImageNet `init_cfg` is not needed.
"""

from __future__ import annotations

import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # tools/, for mm_train's helpers

from mm_train import base_parser, build_runner, load_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("Test (evaluate) a segmentor or detector (OpenMMLab)")
    parser.add_argument("checkpoint", help="checkpoint file")
    args = parser.parse_args(argv)
    if not osp.isfile(args.checkpoint):
        print(f"error: checkpoint {args.checkpoint!r} does not exist", file=sys.stderr)
        return 2
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    runner = build_runner(cfg, ["test_dataloader"], pretrained=False)
    if runner is None:
        return 2
    runner.test()
    return 0


if __name__ == "__main__":
    sys.exit(main())
