"""In a notebook: the script run with %run in a real Jupyter kernel (ipykernel, driven by
jupyter_client and nbclient as Jupyter runs it), twice in one kernel, resumed, stopped with the
kernel's interrupt, showing its grids inline; and its `# %%` cells run one after another."""
import re

import pytest

from conftest import ROOT, SCRIPT, TINY, checkpoint_arrays, checkpoint_meta, losses, same_arrays, straight_run

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")


def notebook(*sources):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])


def execute(nb, cwd):
    """Run every cell in a fresh kernel, as Jupyter's "Run all" does; returns the notebook."""
    try:
        nbclient.NotebookClient(nb, timeout=None, kernel_name="python3", resources={"metadata": {"path": str(cwd)}},
                                allow_errors=False).execute()
    except RuntimeError as e:  # no kernel could start here
        pytest.skip(f"no Jupyter kernel starts here: {e}")
    return nb


def text(cell):
    """What a cell printed, its rich outputs' plain text included."""
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def images(cell):
    return [o for o in cell.outputs if o.output_type == "display_data" and "image/png" in o.data]


def run_line(tmp_path, *flags):
    return "%run " + " ".join([SCRIPT, *TINY, "--out-dir", str(tmp_path / "out"), *flags])


def test_run_twice_and_resume_in_one_kernel(tmp_path):
    """%run works, again in the same kernel, and --resume there equals a straight run; the kernel's
    environment and handlers are as they were; switching the backend in it is one line."""
    nb = execute(notebook("import os; environment = dict(os.environ)",
                          run_line(tmp_path, "--epochs", "2", "--sample-every", "1"),
                          run_line(tmp_path, "--epochs", "2", "--sample-every", "1", "--out-dir", str(tmp_path / "again")),
                          run_line(tmp_path, "--epochs", "3", "--sample-every", "1", "--resume"),
                          "import signal; print(signal.getsignal(signal.SIGINT), environment == dict(os.environ))",
                          "%env KERAS_BACKEND=jax",
                          run_line(tmp_path, "--epochs", "1", "--out-dir", str(tmp_path / "jax")),
                          "import tensorflow; print(tensorflow.constant(6) * 7)"), tmp_path)
    _, first, second, resumed, handler, _, switched, tensorflow = nb.cells
    assert "Epoch 2/2: d_loss" in text(first) and "Done:" in text(first)
    assert len(images(first)) >= 2 + 2  # the two grids as they are saved, the curves at the end
    assert losses(tmp_path / "out")[:2] == losses(tmp_path / "again")  # the second run in the kernel is the same run
    assert "Resuming from" in text(resumed) and "Epoch 3/3" in text(resumed)
    assert "default_int_handler" in text(handler) and "True" in text(handler)  # as the kernel had them
    assert "Keras is already loaded with tensorflow in this kernel: restart" in text(switched)
    assert text(switched).count("\n") == 1 and not (tmp_path / "jax").exists()
    assert "42" in text(tensorflow)  # the user's own import still works
    straight = straight_run(tmp_path / "straight", "--epochs", "3", "--sample-every", "1")
    assert losses(tmp_path / "out") == losses(straight)
    assert same_arrays(checkpoint_arrays(tmp_path / "out" / "checkpoint.npz"),
                       checkpoint_arrays(straight / "checkpoint.npz"))


def test_the_kernels_stop_button_stops_at_a_step_and_resumes_exactly(tmp_path):
    """An interrupt of the kernel during training: the checkpoint is written, the resume command
    is printed in its %run form, the kernel answers the next cell, and that --resume is exact."""
    manager = jupyter_client.KernelManager(kernel_name="python3")
    try:
        manager.start_kernel(cwd=str(tmp_path))
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no Jupyter kernel starts here: {e}")
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=None)
        flags = ["--epochs", "40", "--score-digits", "0"]
        message = client.execute(run_line(tmp_path, *flags))
        seen = ""
        while "Epoch 2/40" not in seen:  # a checkpoint exists from epoch 1 on
            reply = client.get_iopub_msg(timeout=None)
            if reply["parent_header"].get("msg_id") == message and reply["msg_type"] == "stream":
                seen += reply["content"]["text"]
        manager.interrupt_kernel()
        while True:
            reply = client.get_iopub_msg(timeout=None)
            if reply["parent_header"].get("msg_id") != message:
                continue
            if reply["msg_type"] == "stream":
                seen += reply["content"]["text"]
            if reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle":
                break
        stopped = re.search(r"Stopped; \S+checkpoint.npz holds epoch (\d+); resume with: (.*)", seen)
        assert stopped and "Traceback" not in seen, seen[-2000:]
        assert stopped[2].startswith("%run ") and stopped[2].endswith("--resume")
        held = int(stopped[1])
        assert checkpoint_meta(tmp_path / "out" / "checkpoint.npz")["epoch"] == held
        answer = client.execute_interactive("print(6 * 7)", timeout=None)
        assert answer["content"]["status"] == "ok"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    resumed_to = held + 1
    nb = execute(notebook(run_line(tmp_path, "--epochs", str(resumed_to), "--score-digits", "0", "--resume")), tmp_path)
    assert f"Epoch {resumed_to}/{resumed_to}" in text(nb.cells[0])
    straight = straight_run(tmp_path / "straight", "--epochs", str(resumed_to), "--score-digits", "0")
    assert same_arrays(checkpoint_arrays(tmp_path / "out" / "checkpoint.npz"),
                       checkpoint_arrays(straight / "checkpoint.npz"))


def test_the_scripts_cells_run_one_after_another(tmp_path):
    """The `# %%` cells of gan_mnist.py, run in order in a kernel as a notebook made from the file
    would run them (the tutorial's parts, then the harness), then a tiny main([...]): first in another
    folder than the clone's (a new Colab notebook's /content), which it names as the fault, then in the clone."""
    with open(SCRIPT) as f:
        source = f.read()
    cells = [c for c in re.split(r"^(?=# %%)", source, flags=re.M) if c.strip()]
    assert len(cells) >= 8 and sum("def get_generator(" in c for c in cells) == 1
    tiny = f"main({[*TINY, '--epochs', '1', '--out-dir', str(tmp_path / 'out')]!r})"
    panel = next(c for c in cells if "HERE = " in c)  # run again in the clone: its paths follow the folder
    nb = execute(notebook(*cells, f"assert {tiny} == 2", f"os.chdir({ROOT!r})", panel, "get_generator(100).summary()",
                          tiny), tmp_path)
    assert "run in the clone (data/ is there)" in text(nb.cells[len(cells)])  # not "damaged", not "git checkout" alone
    assert "1,486,352" in re.sub(r"\x1b\[[0-9;]*m", "", text(nb.cells[-2]))  # the tutorial's generator
    assert "Epoch 1/1: d_loss" in text(nb.cells[-1]) and (tmp_path / "out" / "generator.keras").exists()


def test_the_readmes_notebook_cells_run_as_written(tmp_path):
    """The README's "In Colab or Jupyter" cells, in the repository's folder as after its `%cd`;
    the %run line gets tiny settings after its own flags (the later flag wins)."""
    with open(f"{ROOT}/README.md") as f:
        readme = f.read()
    section = readme[readme.index("## In Colab or Jupyter"):readme.index("\n## ", readme.index("## In Colab or Jupyter") + 3)]
    cells = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(cells) == 2 and cells[1].startswith("%run gan_mnist.py")
    tiny = " ".join([*TINY, "--epochs", "1", "--out-dir", str(tmp_path / "out")])
    nb = execute(notebook(f"%cd {ROOT}", cells[0], "import sys; print('keras' in sys.modules)",
                          cells[1].strip() + " " + tiny), tmp_path)
    assert re.search(r"\d+\.\d+\.\d+ 3\.\d+", text(nb.cells[1])), text(nb.cells[1])  # the versions
    assert text(nb.cells[2]).strip() == "False"  # the version cell loaded no library
    nb.cells.pop(2)
    assert "Epoch 1/1: d_loss" in text(nb.cells[2]) and images(nb.cells[2])
