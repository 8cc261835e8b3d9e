"""Run timm's own ``train.py`` with timm-adl's architectures registered.

``python -m timm_adl.timm_train [--train-script PATH] ARGS`` imports ``timm_adl`` (timm has no plugin
discovery, so ``--model resnet50_se_adl`` or ``--model adl_inserted --model-kwargs base_architecture=...``
are unknown to timm until then) and runs the user's copy of timm's ``train.py`` with ``ARGS``, exactly as
``python train.py ARGS`` would. ``train.py`` is a script of the pytorch-image-models repository, not part of
the ``timm`` package, so it is found from ``--train-script``, then ``$TIMM_TRAIN_SCRIPT``, then
``./train.py``; nothing is downloaded.
"""

import argparse
import os
import runpy
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import timm

import timm_adl  # noqa: F401  (registers the architectures with timm)

__all__ = ['ENV_VAR', 'find_train_script', 'main', 'run_train_script']

ENV_VAR = 'TIMM_TRAIN_SCRIPT'
REPO_URL = 'https://github.com/huggingface/pytorch-image-models'


def _where_to_get_it() -> str:
    tag = f'v{timm.__version__}'
    return (
        f"timm's train.py is a script of the pytorch-image-models repository, not part of the timm package. "
        f'Get the one matching your timm ({timm.__version__}): '
        f'git clone --depth 1 --branch {tag} {REPO_URL} (or download '
        f'https://raw.githubusercontent.com/huggingface/pytorch-image-models/{tag}/train.py), then pass '
        f'--train-script PATH/train.py or set {ENV_VAR}=PATH/train.py'
    )


def find_train_script(
    explicit: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> Path:
    """The train.py to run: ``explicit``, else ``$TIMM_TRAIN_SCRIPT``, else ``train.py`` in ``cwd``.

    A path that is given but missing is an error (never a silent fall-through to the next place), so a typo
    cannot make another script run.
    """
    environ = os.environ if environ is None else environ
    for source, value in (('--train-script', explicit), (ENV_VAR, environ.get(ENV_VAR))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f'{source} {str(value)!r} is not a file. {_where_to_get_it()}')
            return path.resolve()
    local = Path(cwd or os.getcwd()) / 'train.py'
    if local.is_file():
        return local.resolve()
    raise FileNotFoundError(f'no train.py given and none in {local.parent}. {_where_to_get_it()}')


def run_train_script(script: str | os.PathLike, args: Sequence[str]) -> None:
    """Run ``script`` as ``__main__`` with ``args``, as ``python script args`` would (same process, so the
    architectures timm-adl registered are in timm's registry)."""
    script = Path(script).resolve()
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.parent))  # as the interpreter does for a script
    try:
        runpy.run_path(str(script), run_name='__main__')
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def main(argv: Sequence[str] | None = None) -> None:
    """Take ``--train-script PATH`` off the command line; everything else goes to train.py unchanged."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument('--train-script', default=None)
    ours, rest = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    try:
        script = find_train_script(ours.train_script)
    except FileNotFoundError as err:
        raise SystemExit(f'timm_adl.timm_train: {err}') from None
    run_train_script(script, rest)


if __name__ == '__main__':
    main()
