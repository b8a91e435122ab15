"""--precision bfloat16: Keras mixed precision, with float32 weights, optimizer state and outputs."""
import keras
import numpy as np

from conftest import TINY, checkpoint_arrays, losses, pixels, same_arrays

BF16 = ["--precision", "bfloat16", "--sample-every", "1000", *TINY]


def test_bfloat16_run_resume_refusal_and_generate(main, tmp_path, capsys):
    # straight: 3 epochs; stopped: 1 epoch, then resumed to 3 in the same folders
    assert main("--epochs", "3", *BF16, "--out-dir", str(tmp_path / "a"),
                "--checkpoint-dir", str(tmp_path / "a_ck")) == 0
    assert main("--epochs", "1", *BF16) == 0
    assert main("--epochs", "3", *TINY, "--sample-every", "1000", "--resume") == 2  # float32
    assert "was made with precision='bfloat16', not 'float32'" in capsys.readouterr().err
    assert main("--epochs", "3", *BF16, "--resume") == 0
    assert losses(tmp_path / "out") == losses(tmp_path / "a")
    assert same_arrays(checkpoint_arrays(tmp_path / "ck" / "checkpoint.npz"),
                       checkpoint_arrays(tmp_path / "a_ck" / "checkpoint.npz"))
    rows = losses(tmp_path / "a")
    assert len(rows) == 3 and all(0 < float(d) < 5 and 0 < float(g) < 10 for _, d, g in rows)

    model = keras.models.load_model(tmp_path / "a" / "generator.keras", compile=False)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.compute_dtype for layer in dense] == ["bfloat16"] * 3 + ["float32"]
    assert all(w.dtype == "float32" for w in model.weights)
    assert main("--generate", str(tmp_path / "a" / "generator.keras"), "--out", str(tmp_path / "g.png")) == 0
    assert np.array_equal(pixels(tmp_path / "g.png"),
                          pixels(tmp_path / "a" / "gan_generated_image_epoch_3.png"))


def test_bfloat16_differs_from_float32_but_not_by_much(main, tmp_path):
    assert main("--epochs", "1", *BF16, "--out-dir", str(tmp_path / "bf")) == 0
    assert main("--epochs", "1", *TINY, "--sample-every", "1000", "--out-dir", str(tmp_path / "fp"),
                "--checkpoint-dir", str(tmp_path / "fp_ck")) == 0
    (_, d_bf, g_bf), (_, d_fp, g_fp) = losses(tmp_path / "bf")[0], losses(tmp_path / "fp")[0]
    assert (d_bf, g_bf) != (d_fp, g_fp)
    assert abs(float(d_bf) - float(d_fp)) < 0.05 and abs(float(g_bf) - float(g_fp)) < 0.05
    # the layers built for the run leave Keras' global policy as it was
    assert keras.config.dtype_policy().name == "float32"


def test_the_bfloat16_advice_follows_the_measurements(monkeypatch, tmp_path):
    """No advice against bfloat16 where it measured faster (AMX, AMD's AVX512-BF16), a note where
    it measured slower (an Intel CPU without AMX)."""
    import builtins

    import gan_mnist
    assert gan_mnist.precision_note("float32") is None
    real_open = builtins.open

    def this_cpuinfo(path, *args, **kwargs):
        return real_open(tmp_path / "cpuinfo" if path == "/proc/cpuinfo" else path, *args, **kwargs)
    for vendor, flags, slower in (("GenuineIntel", "avx512f avx512_bf16 amx_bf16 amx_tile", False),
                                  ("AuthenticAMD", "avx512f avx512_bf16", False),
                                  ("GenuineIntel", "avx512f avx512_bf16", True),
                                  ("GenuineIntel", "avx2", True)):
        (tmp_path / "cpuinfo").write_text(f"vendor_id\t: {vendor}\nflags\t\t: fpu {flags}\n")
        monkeypatch.setattr(gan_mnist, "open", this_cpuinfo, raising=False)
        note = gan_mnist.precision_note("bfloat16")
        assert (note is not None and "measured slower" in note and "samples/README.md" in note) == slower, (vendor, flags, note)
