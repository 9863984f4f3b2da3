"""Print the fully merged config (after ``_base_`` inheritance and ``--cfg-options``)."""
from __future__ import annotations

import argparse

from mmengine.config import Config, DictAction

from lsa.compat import apply as apply_compat


def main(argv: list[str] | None = None) -> str:
    apply_compat()  # before any toolbox import
    parser = argparse.ArgumentParser(description='Print the merged config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.backbone.arch=small')
    args = parser.parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    print(f'Config:\n{cfg.pretty_text}')
    return cfg.pretty_text


if __name__ == '__main__':
    main()
