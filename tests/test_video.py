"""decode() on real clips and on broken files made here; decode_ffmpeg() as the reference it must match."""

import os
import subprocess

import numpy as np
import pytest

from tgprep.video import VideoError, decode, decode_ffmpeg, encode_video, ffmpeg_exe, target_size

HMDB = {
    "wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi": (72, 560),
    "wave/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi": (74, 320),
    "wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi": (48, 432),
    "cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi": (83, 320),
}


def moving_square(frames: int, height: int, width: int) -> np.ndarray:
    video = np.full((frames, height, width, 3), 40, np.uint8)
    for t in range(frames):
        video[t, 8:24, 4 * t : 4 * t + 16] = (230, 120, 20)
    return video


def lavfi(path, *args):
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", *args, str(path)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


@pytest.mark.parametrize("name", sorted(HMDB))
def test_hmdb_frame_count_is_what_decodes_not_the_header(real_videos, name):
    count, width = HMDB[name]
    video = decode(real_videos / "hmdb51" / name)
    assert video.frames.shape == (count, 240, width, 3) and video.frames.dtype == np.uint8
    assert video.fps == 30.0 and video.source_size == (width, 240)


def test_ucf_clips(real_videos):
    for name, count in (("v_SoccerJuggling_g23_c01.avi", 240), ("v_SoccerJuggling_g24_c01.avi", 251)):
        video = decode(real_videos / "ucf101/SoccerJuggling" / name)
        assert video.frames.shape == (count, 240, 320, 3)
        assert video.fps == pytest.approx(29.97, abs=0.01)


def test_rotation_tag_gives_upright_portrait_frames_like_ffmpeg(real_videos):
    path = real_videos / "other/video_90.mov"
    video = decode(path)
    assert video.source_size == (320, 568)
    assert video.frames.shape == (3, 454, 256, 3)
    # the ffmpeg program turns the frames itself: the same direction gives nearly the same pixels
    reference = decode_ffmpeg(path)
    assert reference.shape == video.frames.shape
    assert np.abs(reference.astype(int) - video.frames).mean() < 1.0
    assert np.abs(np.rot90(reference, 2, axes=(1, 2)).astype(int) - video.frames).mean() > 10


def test_pyav_decode_matches_the_ffmpeg_program(real_videos):
    path = real_videos / "hmdb51/wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi"
    frames, reference = decode(path, short_side=128).frames, decode_ffmpeg(path, short_side=128)
    assert frames.shape == reference.shape == (48, 128, 230, 3)
    assert np.abs(frames.astype(int) - reference).mean() < 0.5


def test_small_video_is_not_upscaled(real_videos):
    path = real_videos / "other/carphone_pristine.mp4"
    assert decode(path, short_side=256).frames.shape == (120, 144, 176, 3)
    assert decode(path, short_side=100).frames.shape == (120, 100, 122, 3)


def test_short_side_zero_keeps_native_size(tmp_path):
    path = tmp_path / "square.avi"
    encode_video(path, moving_square(6, 300, 400), fps=25)
    assert decode(path, short_side=0).frames.shape == (6, 300, 400, 3)
    video = decode(path, short_side=256)
    assert video.frames.shape == (6, 256, 341, 3) and video.source_size == (400, 300) and video.fps == 25.0
    assert target_size(400, 300, 0) == (400, 300) and target_size(300, 400, 150) == (150, 200)


def test_webm_without_duration_decodes(real_videos):
    video = decode(real_videos / "other/no_duration.webm")
    assert video.frames.shape == (74, 256, 455, 3)


def test_variable_frame_rate_keeps_every_frame_once(tmp_path):
    path = tmp_path / "vfr.mkv"
    # 10 frames, then a 2 s gap before frame 5: a constant-rate decode would invent ~60 duplicates
    lavfi(path, "-i", "testsrc2=size=64x48:rate=10:duration=1", "-vf", "setpts=N/10/TB+gte(N\\,5)*2/TB",
          "-fps_mode", "passthrough", "-c:v", "libx264")
    assert len(decode(path).frames) == 10
    assert len(decode_ffmpeg(path)) == 10


def test_audio_is_ignored(real_videos):
    assert len(decode(real_videos / "kinetics400/using_segway/R6llTwEh07w_000000_000010.mp4", short_side=64).frames) == 303


@pytest.mark.parametrize("kind, reason", [
    ("corrupt", "corrupt video: Invalid data"),
    ("audio", "no video stream"),
    ("text", "not a video: Invalid data"),
    ("missing", "missing"),
    ("one frame", "1 frame decoded"),
    ("fifo", "not a regular file"),
])
def test_bad_videos_raise_video_error_with_a_reason(real_videos, tmp_path, kind, reason):
    path = tmp_path / "bad.avi"
    if kind == "corrupt":
        path = real_videos / "other/corrupted.mp4"
    elif kind == "audio":
        path = tmp_path / "tone.m4a"
        lavfi(path, "-i", "sine=frequency=440:duration=0.5", "-c:a", "aac")
    elif kind == "text":
        path.write_text("this is not a video\n")
    elif kind == "one frame":
        encode_video(path, moving_square(1, 32, 48), fps=25)
    elif kind == "fifo":
        os.mkfifo(path)  # opening it would block forever: it must be refused, not hang
    with pytest.raises(VideoError) as error:
        decode(path)
    assert str(error.value).startswith(reason)


def test_timeout_becomes_a_video_error(real_videos):
    path = real_videos / "ucf101/SoccerJuggling/v_SoccerJuggling_g23_c01.avi"
    with pytest.raises(VideoError, match=r"^timed out after 0.001 s$"):
        decode(path, timeout=0.001)
    with pytest.raises(VideoError, match=r"^timed out after 0.001 s$"):
        decode_ffmpeg(path, timeout=0.001)
    assert len(decode(path, timeout=30).frames) == 240
