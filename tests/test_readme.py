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


def test_the_readme_says_where_the_tutorial_is():
    """The README's line numbers of the tutorial's part match the script; every tutorial function
    comes before the banner, and nothing else is defined between them."""
    match = re.search(r"They run from line (\d+) to the end of `train\(\)` at line (\d+)\.", readme())
    assert match, "the README no longer says where the tutorial is"
    first, last = map(int, match.groups())
    with open(os.path.join(ROOT, "gan_mnist.py")) as f:
        lines = f.read().splitlines()
    assert lines[first - 1].startswith("def load_mnist_data(") and lines[last - 1].strip().startswith("run.finish()")
    banner = next(i for i, line in enumerate(lines) if line.startswith("# NOT IN THE TUTORIAL"))
    defined = [line.split("(")[0].split()[1] for line in lines[first - 1:banner] if line.startswith(("def ", "class "))]
    assert defined == ["load_mnist_data", "get_optimizer", "get_generator", "get_discriminator", "get_gan_network",
                       "train_discriminator", "train_generator", "make_train_step", "plot_generated_images", "train"]
