"""In a notebook: the script run with %run in a real Jupyter kernel (ipykernel, driven by
jupyter_client and nbclient as Jupyter runs it), twice in one kernel, resumed, stopped with the
kernel's interrupt, showing its grids inline; main(["--help"]), --generate's picture; and its
`# %%` cells run one after another, from another folder first."""
import re

import pytest

from conftest import HANG, ROOT, SCRIPT, TINY, checkpoint, losses, same_arrays, straight_run

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")


def execute(cwd, *sources):
    """Run the cells in a fresh kernel, as Jupyter's "Run all" does; returns the notebook."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nbclient.NotebookClient(nb, timeout=HANG, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def progress_bars(nb):
    """The progress bars' last states (tqdm's ipywidgets), as Jupyter keeps them in the notebook."""
    widgets = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    return [w["state"] for w in widgets.get("state", {}).values()
            if w["model_name"] == "FloatProgressModel"]


def text(cell):
    """What a cell printed, its rich outputs' plain text included."""
    return "".join(o.get("text") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def images(cell):
    return [o for o in cell.outputs if o.output_type == "display_data" and "image/png" in o.data]


def run_line(tmp_path, *flags):
    return "%run " + " ".join([SCRIPT, *TINY, "--out-dir", str(tmp_path / "out"), *flags])


def test_run_twice_and_resume_in_one_kernel(tmp_path):
    """%run works, and again in the same kernel (--resume); the kernel's handlers and
    XLA_FLAGS are as they were; main(["--help"]) prints the help and returns
    0; --generate shows its picture."""
    nb = execute(tmp_path, "import os; environment = dict(os.environ)",
                 run_line(tmp_path, "--epochs", "2", "--sample-every", "1"),
                 run_line(tmp_path, "--epochs", "3", "--sample-every", "1", "--resume"),
                 "import signal, sys; print(signal.getsignal(signal.SIGINT), "
                 "environment.get('XLA_FLAGS') == os.environ.get('XLA_FLAGS'))",
                 f"sys.path.insert(0, {ROOT!r}); import gan_mnist; gan_mnist.main(['--help'])",
                 f"%run {SCRIPT} --generate {tmp_path}/out/generator.keras --out g.png")
    _, first, resumed, handler, help_, generate = nb.cells
    assert "Epoch 2/2: d_loss" in text(first) and "Done:" in text(first)
    assert len(images(first)) >= 2 + 2  # the two grids as they are saved, the curves at the end
    assert any("image/gif" in o.get("data", {}) for o in first.outputs)  # and the GIF
    # a bar for each epoch (2 + 1), each to the epoch's 8 steps
    assert [(bar["value"], bar["max"]) for bar in progress_bars(nb)] == [(8, 8)] * 3
    assert "Resuming from" in text(resumed) and "Epoch 3/3" in text(resumed)
    assert "default_int_handler" in text(handler) and "True" in text(handler)
    assert text(help_).count("usage: gan_mnist.py") == 1 and text(help_).strip().endswith("0")
    assert "Error" not in text(help_) and "SystemExit" not in text(help_)
    assert "Wrote" in text(generate) and len(images(generate)) == 1


def test_the_kernels_stop_button_stops_mid_epoch_and_resumes_exactly(tmp_path):
    """An interrupt of the kernel during training: the checkpoint holds where training was, the
    resume command is printed in its %run form, and that line, run next in the kernel, continues
    exactly."""
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=HANG)
        message = client.execute(run_line(tmp_path, "--epochs", "40", "--score-digits", "0"))
        seen = ""
        while "Epoch 2/40" not in seen:  # a checkpoint exists from epoch 1 on
            # a training kernel is never silent for minutes: one that died fails here
            reply = client.get_iopub_msg(timeout=300)
            if reply["parent_header"].get("msg_id") == message:
                seen += reply["content"].get("text", "")
                # the %run ended (failed) before its second epoch
                assert reply["content"].get("execution_state") != "idle", seen[-2000:]
        manager.interrupt_kernel()
        state = None
        while state != "idle":
            reply = client.get_iopub_msg(timeout=300)
            if reply["parent_header"].get("msg_id") == message:
                seen += reply["content"].get("text", "")
                state = reply["content"].get("execution_state")
        stopped = re.search(r"Stopped; \S+checkpoint.npz holds (\d+) steps into epoch (\d+); "
                            r"resume with: (.*)", seen)
        assert stopped and "Traceback" not in seen, seen[-2000:]
        assert stopped[3].startswith("%run ") and stopped[3].endswith("--resume")
        meta = checkpoint(tmp_path / "out" / "checkpoint.npz")[0]
        assert (meta["step"], meta["epoch"] + 1) == (int(stopped[1]), int(stopped[2]))
        resumed_to = str(meta["epoch"] + 2)
        # the printed line, run in the same kernel, which answers
        reply = client.execute_interactive(f"{stopped[3]} --epochs {resumed_to}", timeout=HANG)
        assert reply["content"]["status"] == "ok"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert len(losses(tmp_path / "out")) == int(resumed_to)
    straight = straight_run(tmp_path / "straight", "--epochs", resumed_to, "--score-digits", "0")
    assert same_arrays(checkpoint(tmp_path / "out" / "checkpoint.npz")[1],
                       checkpoint(straight / "checkpoint.npz")[1])


def test_the_scripts_cells_run_one_after_another(tmp_path):
    """The `# %%` cells of gan_mnist.py, run in order in a kernel as a notebook made from the
    file would run them, then a tiny main([...]): first in another folder than the clone's (a new
    Colab notebook's /content), which it names as the fault, then after %cd into the clone."""
    with open(SCRIPT) as f:
        source = f.read()
    cells = [c for c in re.split(r"^(?=# %%)", source, flags=re.M) if c.strip()]
    assert len(cells) >= 8 and sum("def get_generator(" in c for c in cells) == 1
    tiny = f"main({[*TINY, '--epochs', '1', '--out-dir', str(tmp_path / 'out')]!r})"
    ran = execute(tmp_path, *cells, f"assert {tiny} == 2", f"%cd {ROOT}",
                  "get_generator(100).summary()", tiny).cells
    assert "run in the clone (data/ is there)" in text(ran[len(cells)])
    assert "1,486,352" in re.sub(r"\x1b\[[0-9;]*m", "", text(ran[-2]))  # the tutorial's generator
    assert "Epoch 1/1: d_loss" in text(ran[-1]) and (tmp_path / "out" / "generator.keras").exists()


def test_the_readmes_notebook_cells_run_as_written(tmp_path):
    """The README's "In Colab or Jupyter" cells, in the clone as after its `%cd`; the %run line
    gets tiny settings after its own flags (the later flag wins)."""
    with open(f"{ROOT}/README.md") as f:
        readme = f.read()
    start = readme.index("## In Colab or Jupyter")
    cells = re.findall(r"```python\n(.*?)```", readme[start:readme.index("\n## ", start + 3)], re.S)
    assert len(cells) == 2 and cells[1].startswith("%run gan_mnist.py")
    tiny = " ".join([*TINY, "--epochs", "1", "--out-dir", str(tmp_path / "out")])
    ran = execute(tmp_path, f"%cd {ROOT}", cells[0], "import sys; print('keras' in sys.modules)",
                  cells[1].strip() + " " + tiny).cells
    assert re.search(r"\d+\.\d+\.\d+ 3\.\d+", text(ran[1])), text(ran[1])  # the versions
    assert text(ran[2]).strip() == "False"  # the version cell loaded no library
    assert "Epoch 1/1: d_loss" in text(ran[3]) and images(ran[3])
