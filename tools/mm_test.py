"""Evaluate a checkpoint with an mmsegmentation 1.x / mmdetection 3.x config, the zoo's
backbones registered.

    python tools/mm_test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]

As mmseg's and mmdet's own `tools/test.py`: the checkpoint is loaded with `load_from` (read
weights-only; an official UniRepLKNet seg/det checkpoint loads too, its keys are renamed), the
test dataloader and evaluator of the config run, metrics are printed and logged under the work
directory (default ./work_dirs/<config name>). The backbone's ImageNet `init_cfg` is not needed.
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # the repo root, for zoo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description="Test (evaluate) a segmentor or detector")
    parser.add_argument("config", help="test config file path")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--work-dir", help="the directory to save the evaluation metrics")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help="override settings in the config, key=value",
    )
    parser.add_argument(
        "--launcher",
        choices=["none", "pytorch", "slurm", "mpi"],
        default="none",
        help="job launcher",
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    import zoo.integrations.mm as zoo_mm  # registers the backbones before the config builds

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir", None) is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    try:
        if not osp.isfile(args.checkpoint):
            raise zoo_mm.ConfigError(f"checkpoint {args.checkpoint!r} does not exist")
        zoo_mm.check_config_paths(cfg, ["test_dataloader"], pretrained=False)
    except zoo_mm.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    runner = Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)
    runner.test()
    return 0


if __name__ == "__main__":
    sys.exit(main())
