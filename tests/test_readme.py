"""The README shows real files and the commands CI runs; gan_mnist.py keeps its reading order
(the tutorial first and alone) and the field's density (README, How to read)."""
import ast
import glob
import io
import os
import re
import tokenize

from conftest import ROOT

TUTORIAL = ["load_mnist_data", "get_optimizer", "get_generator", "get_discriminator",
            "get_gan_network", "train_on_batch", "train_one_batch", "plot_generated_images",
            "train"]
LAYOUT = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
          tokenize.ENDMARKER)


def read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def test_every_image_the_readme_links_exists():
    text = read("README.md") + read("samples/README.md").replace("](", "](samples/")
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"", text)
    links = [markdown or html for markdown, html in links]
    local = [link.replace("samples/../", "") for link in links if "://" not in link]
    assert len(local) >= 5 and all(os.path.isfile(os.path.join(ROOT, link)) for link in local)


def test_ci_runs_the_readme_test_command():
    command = "python -m pytest -q -n 2 tests"
    install = "python -m pip install -r requirements.txt"
    assert f"```bash\n{install}\n{command}\n```" in read("README.md")
    assert command in read(".ci/run") and "-r requirements.txt" in read(".ci/run")


def weight(source):
    """Code tokens (no comments, docstrings or layout), as the developers' guide counts them."""
    return len([t for t in tokenize.generate_tokens(io.StringIO(source).readline)
                if t.type not in LAYOUT and not t.string.lstrip("rbuRBU").startswith('"""')])


def test_the_field_s_density():
    """At most 100 columns and no nested conditional expression anywhere; gan_mnist.py at most
    8,000 code tokens and 7.5 a line, tests/ at most 17,500."""
    paths = ["gan_mnist.py", *glob.glob("tests/*.py", root_dir=ROOT)]
    sources = {path: read(path) for path in paths}
    for path, source in sources.items():
        assert max(map(len, source.splitlines())) <= 100, path
        nested = [n.lineno for n in ast.walk(ast.parse(source)) if isinstance(n, ast.IfExp)
                  and ast.IfExp in (type(n.body), type(n.orelse))]
        assert not nested, (path, nested)
    code = sources.pop("gan_mnist.py")
    assert weight(code) <= 8000 and weight(code) <= 7.5 * len(code.splitlines())
    assert sum(weight(s) for p, s in sources.items() if "benchmark" not in p) <= 17500


def test_the_tutorial_comes_first_and_alone():
    """The docstring, the imports and the constants, then the tutorial's parts in its order and
    nothing else up to the end of train(); main() last."""
    tree = ast.parse(read("gan_mnist.py"))
    defs = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    assert [node.name for node in defs[:len(TUTORIAL) + 1]] == ["import_libraries", *TUTORIAL]
    assert defs[-1].name == "main"
    before = tree.body[1:tree.body.index(defs[1])]
    assert all(isinstance(n, (ast.Import, ast.FunctionDef, ast.Assign)) for n in before), before
    assert all(f"`{name}`" in read("README.md") for name in TUTORIAL)


def test_every_call_out_of_the_tutorial_is_marked():
    """A learner sees which lines are the 2017 code: a line of the tutorial's part that calls the
    harness (a name defined below the banner, or the run) says "# extra", or the comment lines
    just above it do."""
    tutorial, harness = read("gan_mnist.py").split("NOT IN THE TUTORIAL")
    names = re.findall(r"^(?:def|class) (\w+)", harness, flags=re.M)
    tutorial = re.sub('""".*?"""', "", tutorial[tutorial.index("def load_mnist_data"):], flags=re.S)
    lines = tutorial.splitlines()
    unmarked = []
    for i, line in enumerate(lines):
        above = i
        while lines[above - 1].strip().startswith("#"):
            above -= 1
        calls = re.search(rf"\b({'|'.join(names)})\(|\brun\.", line.split("#")[0])
        if calls and not any("# extra" in text for text in lines[above:i + 1]):
            unmarked.append(line)
    assert not unmarked, unmarked
