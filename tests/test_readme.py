"""The README shows real files and the commands CI runs."""
import ast
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
    command = "python -m pytest -q -n 2 tests"
    assert f"```bash\npython -m pip install -r requirements.txt\n{command}\n```" in readme()
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    assert command in ci and "pip install" in ci and "requirements.txt" in ci


TUTORIAL = ["load_mnist_data", "get_optimizer", "get_generator", "get_discriminator", "get_gan_network",
            "train_discriminator", "train_generator", "make_train_step", "plot_generated_images", "train"]


def script():
    with open(os.path.join(ROOT, "gan_mnist.py")) as f:
        source = f.read()
    return source, ast.parse(source)


def top_level_names(tree):
    """Each name the module defines (def, class, assignment) and the line of its first definition."""
    names = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.setdefault(node.name, node.lineno)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.setdefault(target.id, node.lineno)
    return names


def test_the_tutorial_comes_first_and_alone_after_the_constants():
    """The control panel, then the start-up code, then the tutorial's parts in its order and
    nothing else up to the end of train(); the README names them, never line numbers."""
    source, tree = script()
    defs = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    first = next(i for i, node in enumerate(defs) if node.name == TUTORIAL[0])
    assert [node.name for node in defs[first:first + len(TUTORIAL)]] == TUTORIAL
    assert all(node.lineno < defs[first].lineno for node in defs[:first])  # start-up code only
    assert {node.name for node in defs[:first]} <= {"stop_while_starting", "keras_backend", "quiet_start_up"}
    names = top_level_names(tree)
    assert names["DATA"] < 60 and names["CHECKPOINT_DIR"] < names[defs[0].name], "the constants come first"
    assert defs[first + len(TUTORIAL) - 1].end_lineno < 350  # issue 23 asked ~330; the start-up checks the backend
    banner = source.index("# NOT IN THE TUTORIAL")
    assert source.index("\ndef train(") < banner < source.index("\nclass UsageError")
    assert not re.search(r"\bline \d+", readme()), "the README names functions, not line numbers"
    assert all(f"`{name}`" in readme() for name in TUTORIAL)


def test_every_call_out_of_the_tutorial_is_marked():
    """A learner sees which lines are the 2017 code: each line of the tutorial's part that calls
    into the harness (a name defined below the banner, or the run object) says "# extra"."""
    source, tree = script()
    lines, names = source.splitlines(), top_level_names(tree)
    end = next(node.end_lineno for node in tree.body if getattr(node, "name", None) == "train")
    unmarked = []
    for node in tree.body:
        if getattr(node, "name", None) not in TUTORIAL:
            continue
        for statement in ast.walk(node):
            if not isinstance(statement, ast.stmt) or isinstance(statement, (ast.FunctionDef, ast.With, ast.For, ast.If)):
                continue
            used = {n.id for n in ast.walk(statement) if isinstance(n, ast.Name)}
            harness = {n for n in used if names.get(n, 0) > end} | ({"run"} & used)
            span = lines[statement.lineno - 1:statement.end_lineno]
            if harness and not any("# extra" in line for line in span):
                unmarked.append((statement.lineno, sorted(harness)))
        for block in ast.walk(node):  # a with/for/if header that calls the harness
            if isinstance(block, (ast.With, ast.If)):
                head = block.items if isinstance(block, ast.With) else [block.test]
                used = {n.id for h in head for n in ast.walk(h) if isinstance(n, ast.Name)}
                harness = {n for n in used if names.get(n, 0) > end} | ({"run"} & used)
                if harness and "# extra" not in lines[block.lineno - 1]:
                    unmarked.append((block.lineno, sorted(harness)))
    assert not unmarked, unmarked
    train = next(node for node in tree.body if getattr(node, "name", None) == "train")
    calls = {n.func.id for n in ast.walk(train) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "plot_generated_images" in calls, "the grid is drawn in train(), as in the tutorial"


def test_the_harness_reads_in_one_direction():
    """Below the banner each definition uses only names defined above it; main() alone may
    look further down (it is last)."""
    _, tree = script()
    names = top_level_names(tree)
    end = next(node.end_lineno for node in tree.body if getattr(node, "name", None) == "train")
    forward = sorted({f"{node.name} -> {sub.id}" for node in tree.body
                      if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.lineno > end and node.name != "main"
                      for sub in ast.walk(node) if isinstance(sub, ast.Name) and names.get(sub.id, 0) > node.lineno})
    assert not forward, forward
    last = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))][-1]
    assert last.name == "main"
