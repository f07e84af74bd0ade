"""setup.cfg's version ranges hold the pinned set of constraints.txt, and this environment is that set."""
import configparser
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def declared_requirements():
    """Every requirement of setup.cfg: install_requires and each extra."""
    setup = configparser.ConfigParser()
    setup.read(REPO / 'setup.cfg')
    lines = setup['options']['install_requires'].splitlines()
    lines += [line for extra in setup['options.extras_require'].values() for line in extra.splitlines()]
    return [Requirement(line) for line in lines if line.strip()]


def pins():
    """constraints.txt as ``{canonical name: version}``."""
    lines = (line.strip() for line in (REPO / 'constraints.txt').read_text().splitlines())
    return {canonicalize_name(name): version for name, _, version in
            (line.partition('==') for line in lines if line and not line.startswith('#'))}


@pytest.mark.parametrize('requirement', declared_requirements(), ids=str)
def test_each_declared_range_holds_its_pin_and_the_installed_version(requirement):
    pinned = pins().get(canonicalize_name(requirement.name))
    assert pinned is not None, f'{requirement.name} is declared in setup.cfg but not pinned in constraints.txt'
    assert requirement.specifier.contains(pinned, prereleases=True), f'{requirement} excludes the pin {pinned}'
    assert metadata.version(requirement.name) == pinned, 'this environment is not the pinned set: make install'


def test_every_pin_is_a_single_exact_version():
    lines = [line for line in (REPO / 'constraints.txt').read_text().splitlines() if line and not line.startswith('#')]
    assert lines and all(line.count('==') == 1 and ' ' not in line for line in lines)


def test_the_torchreid_extra_keeps_the_official_torchreid_and_admits_pypis_repackaging():
    [torchreid] = [requirement for requirement in declared_requirements() if requirement.name == 'torchreid']
    # 1.4.0: KaiyangZhou/deep-person-reid installed from source, what its users hold; 0.2.5: PyPI's repackaging
    assert torchreid.specifier.contains('1.4.0') and torchreid.specifier.contains('0.2.5')
    assert not torchreid.specifier.contains('2.0.0')  # a future major version is not assumed to fit
