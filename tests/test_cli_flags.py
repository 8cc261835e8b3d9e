"""One set of CLI flags: every registered subcommand (found by walking the parser, so commands added later
are checked too) spells the shared flags the same way, documents every flag, ends its help with an example,
and turns a bad input into one line and exit code 2 (in ``cli.main`` only)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from timm_adl.cli import build_parser, main

RST = re.compile(r'``|:(func|mod|class|meth|attr):`')
CHOICE_FLAGS = ('--dataset', '--gt-box-mode', '--align', '--cam-method', '--weights', '--split')
# name -> (type, default, metavar, nargs); a command that has the flag must define it exactly so
SHARED = {
    '--model': (None, None, 'NAME', None),
    '--num-classes': (int, None, 'N', None),
    '--json': (None, None, 'PATH', '?'),
    '--img-size': (int, None, 'N', None),
    '--cam-threshold': (float, 0.2, 'T', None),
    '--data-dir': (None, None, 'DIR', None),
    '--cam-method': (None, None, '{cam,gradcam}', None),
}
OLD_SPELLINGS = ('--threshold', '--input-size')  # hidden aliases only


def _commands(parser: argparse.ArgumentParser, prefix: str = ''):
    """``(name, parser)`` of every leaf subcommand, nested ones (``data cub``) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f'{prefix} {name}'.strip()
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    yield full, sub
                    yield from _commands(sub, full)
                else:
                    yield full, sub


COMMANDS = dict(_commands(build_parser()))
LEAVES = {
    n: p
    for n, p in COMMANDS.items()
    if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
}


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def test_the_walk_finds_every_command():
    assert {'train', 'recipes', 'points', 'push', 'eval', 'cam', 'demo', 'data cub'} <= set(LEAVES)


@pytest.mark.parametrize('name', sorted(COMMANDS))
def test_help_is_complete_with_an_example(name):
    parser = COMMANDS[name]
    assert parser.epilog and re.search(r'^examples?:', parser.epilog, re.M), f'{name}: no example in its help'
    assert parser.formatter_class is argparse.RawDescriptionHelpFormatter, name
    for text in (parser.description or '', parser.epilog):
        assert not RST.search(text), f'{name}: reStructuredText in its help: {text[:80]}'
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.help == argparse.SUPPRESS:
            assert action.dest in {'img_size', 'cam_threshold', 'input_size'} or action.dest.startswith(
                'old_'
            ), f'{name}: hidden flag {action.option_strings or action.dest} is not a deprecated alias'
            continue
        label = action.option_strings or action.dest
        assert action.help and action.help.strip(), f'{name}: {label} has no help'
        assert not RST.search(action.help), f'{name}: {label} help has reStructuredText'


@pytest.mark.parametrize('name', sorted(LEAVES))
def test_shared_flags_are_defined_once(name):
    options = _options(LEAVES[name])
    assert '--json' in options, f'{name}: every command takes --json PATH'
    for flag, (type_, default, metavar, nargs) in SHARED.items():
        if flag not in options:
            continue
        action = options[flag]
        got = (action.type, action.default, action.metavar, action.nargs)
        assert got == (type_, default, metavar, nargs), f'{name} {flag}: {got}'
    if '--json' in options:
        assert options['--json'].const == '-'
    if '--data-dir' in options:
        assert options['--data-dir'].help.startswith('data set root'), name
    if '--device' in options:
        # auto everywhere; train's flag sets the recipe key, so without it the recipe's own key stands
        assert options['--device'].default == ('auto' if name != 'train' else None), name
        assert 'auto (CUDA when present' in options['--device'].help, name
    for old in OLD_SPELLINGS:
        if old in options:
            assert options[old].help == argparse.SUPPRESS, f'{name}: {old} must be a hidden alias'
    for flag in CHOICE_FLAGS:
        if flag in options:
            action = options[flag]
            listed = action.choices is not None or str(action.metavar or '').startswith('{')
            free = flag == '--split' or (name, flag) == (
                'push',
                '--dataset',
            )  # free names (any split, any set)
            assert listed or free, f'{name} {flag}: its values are not listed'
    for action in LEAVES[name]._actions:
        if action.dest in ('out', 'vis_dir') and isinstance(action.default, str):
            assert action.default.startswith(f'runs/{name.split()[0]}'), (
                f'{name}: default output {action.default}'
            )


def test_model_is_a_flag_wherever_a_model_is_named():
    for name in ('points', 'push', 'eval', 'cam'):
        assert '--model' in _options(LEAVES[name]), name


def test_old_spellings_still_work_with_a_warning(capsys):
    assert main(['points', 'resnet18', '--input-size', '3', '64', '64', '--aliases', '--json']) == 0
    out, err = capsys.readouterr()
    assert '"alias": "pool1"' in out
    assert 'positional model name) is deprecated' in err and '--model resnet18' in err
    assert '--input-size is deprecated' in err and '--img-size N' in err
    assert main(['points', '--model', 'resnet18', '--img-size', '64', '--aliases', '--json']) == 0
    out2, err2 = capsys.readouterr()
    assert out2 == out and 'deprecated' not in err2
    args = build_parser().parse_args(['cam', '--image', 'x.jpg', '--threshold', '0.4'])
    assert args.cam_threshold == 0.4 and '--threshold is deprecated' in capsys.readouterr().err


def test_demo_default_output_is_runs_demo():
    assert _options(LEAVES['demo'])['--out'].default == 'runs/demo'  # what the README and Makefile use


def test_train_flags_set_recipe_keys(capsys):
    assert (
        main(['train', 'cub/resnet50_se_adl', '--print-config', '--device', 'cpu', '--data-dir', '/d']) == 0
    )
    out = capsys.readouterr().out
    assert re.search(r'^device: cpu$', out, re.M) and re.search(r'^  root: /d$', out, re.M)
    assert main(['train', 'cub/resnet50_se_adl', 'epochs=3', '--print-config']) == 0  # key=value still work
    assert re.search(r'^epochs: 3$', capsys.readouterr().out, re.M)


def _bad_inputs(tmp: Path) -> dict[str, list[str]]:
    (tmp / 'a_file').write_text('x')
    return {
        'train': ['train', 'cub/resnet50_se_adl', 'optim.lr=.nan', '--print-config'],
        'recipes': ['recipes', '--json', str(tmp / 'a_file' / 'r.json')],
        'data cub': ['data', 'cub', str(tmp / 'd'), '--archive', str(tmp / 'missing.tgz'), '--no-progress'],
        'points': ['points', '--model', 'resnt18'],
        'push': [
            'push',
            '--checkpoint',
            str(tmp / 'missing.safetensors'),
            '--repo-id',
            'a/b',
            '--dry-run',
            str(tmp / 'o'),
        ],
        'eval': ['eval', '--model', 'resnet18', '--data-dir', str(tmp), '--dataset', 'cubb'],
        'cam': ['cam', '--model', 'resnet18', '--image', str(tmp / 'missing.jpg')],
        'demo': ['demo', '--seeds', '0', '0', '--out', str(tmp / 'demo')],
        'eval checkpoint': [
            'eval',
            '--checkpoint',
            str(tmp / 'a_file'),
            '--model',
            'resnet18',
            '--data-dir',
            str(tmp),
            '--dataset',
            'cub',
        ],
    }


BAD_CASES = ('train', 'recipes', 'data cub', 'points', 'push', 'eval', 'cam', 'demo', 'eval checkpoint')


@pytest.mark.parametrize('case', BAD_CASES)
def test_a_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys):
    argv = _bad_inputs(tmp_path)[case]
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith('timm-adl: ')]  # notes and warnings
    assert len(lines) == 1 and lines[0].startswith(f'timm-adl {argv[0]}: error: '), err


def test_errors_are_mapped_in_one_place():
    """No command converts errors itself: ``cli.main`` is the one place (a CliError raised for a bad flag is
    fine; catching the library's errors to re-raise them as CliError is what moved)."""
    commands = Path(__file__).parents[1] / 'timm_adl' / 'commands'
    for path in commands.glob('*.py'):
        text = path.read_text()
        found = re.findall(
            r'except \(?[A-Za-z, ]*Error[A-Za-z, ]*\)? as err:\n\s+raise CliError\(str\(err\)', text
        )
        assert not found, f'{path.name} converts errors itself: {found}'
