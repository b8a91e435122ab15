"""The README shows real files and the commands CI runs."""
import os
import re

from conftest import ROOT


def readme():
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def test_every_image_the_readme_links_exists():
    text = readme()
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text) + re.findall(r'<img [^>]*src="([^"]+)"', text)
    local = [link for link in links if "://" not in link]
    assert len(local) >= 5, "the gallery is missing"
    missing = [link for link in local if not os.path.isfile(os.path.join(ROOT, link))]
    assert not missing, f"README links missing files: {missing}"


def test_ci_runs_the_readme_test_command():
    command = "python -m pytest -q tests"
    assert f"```bash\npython -m pip install -r requirements.txt\n{command}\n```" in readme()
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    assert command in ci and "pip install" in ci and "requirements.txt" in ci
