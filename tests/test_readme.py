"""The README shows real files and the commands CI runs; gan_mnist.py keeps its reading order
and its line budget (README, How to read)."""
import ast
import glob
import io
import os
import re
import tokenize

from conftest import ROOT

TUTORIAL = ["load_mnist_data", "get_optimizer", "get_generator", "get_discriminator", "get_gan_network",
            "train_discriminator", "train_generator", "make_train_step", "plot_generated_images", "train"]


def read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def test_every_image_the_readme_links_exists():
    text = read("README.md") + read("samples/README.md").replace("](", "](samples/")
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text) + re.findall(r'<img [^>]*src="([^"]+)"', text)
    local = [link.replace("samples/../", "") for link in links if "://" not in link]
    assert len(local) >= 5, "the gallery is missing"
    assert not [link for link in local if not os.path.isfile(os.path.join(ROOT, link))]


def test_ci_runs_the_readme_test_command():
    command = "python -m pytest -q -n 2 tests"
    assert f"```bash\npython -m pip install -r requirements.txt\n{command}\n```" in read("README.md")
    ci = read(".ci/run")
    assert command in ci and "pip install" in ci and "requirements.txt" in ci


def test_the_tutorial_comes_first_alone_and_within_the_budget():
    """The constants and the start-up, then the tutorial's parts in its order and nothing else up to
    the end of train(); then the harness, each part using only what stands above it (main() last)."""
    source = read("gan_mnist.py")
    tree = ast.parse(source)
    defs = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    assert [node.name for node in defs[:len(TUTORIAL)]] == TUTORIAL and defs[-1].name == "main"
    first, end = defs[0].lineno, defs[len(TUTORIAL) - 1].end_lineno
    code = {t.start[0] for t in tokenize.generate_tokens(io.StringIO(source).readline)
            if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER, tokenize.STRING)}
    assert len([line for line in code if line < first]) <= 75, "code lines before load_mnist_data"
    assert end <= 280 and len(source.splitlines()) <= 900
    tests = sum(len(read(path).splitlines()) for path in glob.glob(os.path.join(ROOT, "tests", "*.py"))
                if not path.endswith("benchmark.py"))
    assert tests <= 1700
    defined = {}
    for node in tree.body:
        for name in ([node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else
                     [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]):
            defined.setdefault(name, node.lineno)
    forward = {f"{node.name} -> {sub.id}" for node in defs[len(TUTORIAL):-1] for sub in ast.walk(node)
               if isinstance(sub, ast.Name) and defined.get(sub.id, 0) > node.lineno}
    assert not forward, forward
    assert all(f"`{name}`" in read("README.md") for name in TUTORIAL)


def test_every_call_out_of_the_tutorial_is_marked():
    """A learner sees which lines are the 2017 code: a line of the tutorial's part that calls into
    the harness (a name defined below train(), or the run object) says "# extra"."""
    source = read("gan_mnist.py")
    tree, lines = ast.parse(source), source.splitlines()
    end = next(node.end_lineno for node in tree.body if getattr(node, "name", None) == "train")
    below = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.lineno > end}
    unmarked = []
    for node in tree.body:
        if getattr(node, "name", None) in TUTORIAL:
            for statement in ast.walk(node):
                if isinstance(statement, ast.stmt) and not isinstance(statement, (ast.FunctionDef, ast.For)):
                    head = statement.items if isinstance(statement, ast.With) else \
                        [statement.test] if isinstance(statement, ast.If) else [statement]
                    used = {n.id for h in head for n in ast.walk(h) if isinstance(n, ast.Name)}
                    span = lines[statement.lineno - 1:(statement.end_lineno if head == [statement] else statement.lineno)]
                    if used & (below | {"run"}) and not any("# extra" in line for line in span):
                        unmarked.append((statement.lineno, sorted(used & (below | {"run"}))))
    assert not unmarked, unmarked
