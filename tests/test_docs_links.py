"""Relative links in the README and docs/ point at files that exist (a renamed report or figure breaks them)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r'\]\(([^)#\s]+)')   # markdown link or image target, without its #anchor


def broken_links(markdown_files):
    """``[(file, target)]`` of the relative link targets that do not exist next to their file."""
    broken = []
    for md in markdown_files:
        for target in LINK.findall(md.read_text()):
            if '://' not in target and not target.startswith('mailto:') and not (md.parent / target).exists():
                broken.append((md.name, target))
    return broken


def test_readme_and_docs_links_resolve():
    files = [ROOT / 'README.md', *sorted((ROOT / 'docs').rglob('*.md'))]
    assert len(files) > 5
    assert broken_links(files) == []


def test_a_missing_target_is_reported(tmp_path):
    (tmp_path / 'figures').mkdir()
    (tmp_path / 'figures' / 'gains.png').write_bytes(b'png')
    page = tmp_path / 'page.md'
    page.write_text('[ok](figures/gains.png) ![gone](figures/curve.png) [web](https://example.org/x.md) '
                    '[section](page.md#results) [renamed](BENCHMARK_s9.md#protocol)\n')
    assert broken_links([page]) == [('page.md', 'figures/curve.png'), ('page.md', 'BENCHMARK_s9.md')]
