"""The wanserve CLI: generate writes a real mp4; invalid requests exit non-zero and write nothing."""

import subprocess
import sys

from serve.pipeline.video import read_mp4_frames


def _wanserve(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "serve.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_generate_writes_an_mp4_of_the_requested_shape(tmp_path, tiny_dir):
    out = tmp_path / "x.mp4"
    result = _wanserve("generate", "a golden retriever running through a sunny park",
                       "--size", "256x256", "--frames", "17", "--steps", "4", "--seed", "1",
                       "-o", str(out), "--model", str(tiny_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    frames = read_mp4_frames(out.read_bytes())
    assert frames.shape == (17, 256, 256, 3)
    assert "256x256, 17 frames" in result.stdout
    assert "denoiser" in result.stdout and "seed 1" in result.stdout
    assert "4/4" in result.stderr  # the progress bar reached the last step


def test_off_grid_frames_exit_non_zero_and_write_nothing(tmp_path):
    out = tmp_path / "y.mp4"
    result = _wanserve("generate", "a dog", "--frames", "16", "-o", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert "num_frames: must be 4k+1" in result.stderr
    assert not out.exists()


def test_off_grid_size_exits_non_zero_and_names_the_allowed_sizes(tmp_path):
    out = tmp_path / "z.mp4"
    result = _wanserve("generate", "a dog", "--size", "250x250", "-o", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert "width: must be a multiple of 32" in result.stderr
    assert "nearest allowed: 224 or 256" in result.stderr
    assert not out.exists()


def test_a_model_directory_that_is_not_wan_is_refused(tmp_path):
    result = _wanserve("generate", "a dog", "--model", str(tmp_path), "-o", str(tmp_path / "v.mp4"),
                       cwd=tmp_path)
    assert result.returncode == 2
    assert "not a diffusers-format Wan2.2 directory" in result.stderr


def test_tiny_checkpoint_command_writes_a_loadable_directory(tmp_path):
    result = _wanserve("tiny-checkpoint", str(tmp_path / "tiny"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check = subprocess.run(
        [sys.executable, "-c", f"import diffusers; diffusers.WanPipeline.from_pretrained({str(tmp_path / 'tiny')!r})"],
        capture_output=True, text=True, timeout=300,
    )
    assert check.returncode == 0, check.stderr


def test_generate_with_an_image_conditions_the_video_on_it(tmp_path, tiny_dir):
    from PIL import Image

    Image.new("RGB", (300, 200), (200, 30, 30)).save(tmp_path / "first.png")
    out = tmp_path / "i2v.mp4"
    result = _wanserve("generate", "a red wall", "--image", str(tmp_path / "first.png"),
                       "--size", "256x128", "--frames", "5", "--steps", "2", "--seed", "1",
                       "-o", str(out), "--model", str(tiny_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_mp4_frames(out.read_bytes()).shape == (5, 128, 256, 3)
    assert "image_encoder" in result.stdout  # the image went through the VAE encoder


def test_generate_refuses_an_image_that_is_not_png_jpeg_or_webp(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "first.gif")
    out = tmp_path / "never.mp4"
    result = _wanserve("generate", "a dog", "--image", str(tmp_path / "first.gif"), "-o", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert "is a GIF file; send a PNG, JPEG or WebP image" in result.stderr
    assert not out.exists()
