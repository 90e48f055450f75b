"""Sounds through PyAV, trusting nothing: only the containers we list, chosen from the content, and no
way for a demuxer to open anything but the file itself (no playlist, concat, HLS/DASH or image sequence).

FFmpeg never sees a file name: bytes and paths alike are read through a Python file object without a
``name``, so probing looks at the content only and a relative name inside a file resolves to nothing.
Its own fences then hold the rest: ``format_whitelist`` refuses every other demuxer after probing, and
an empty ``protocol_whitelist`` (plus a refusing ``io_open``) stops any nested open, ``file:`` included.
Every file refused at open gets one message, so a refusal says nothing about other files."""
from __future__ import annotations

import io
import os
from typing import BinaryIO

import av
import numpy as np

from .decoded import Decoded, DecodeError, reason

# FFmpeg demuxer names for the containers of mmsearch's sound extensions (mov is mp4/m4a/mov,
# matroska is mkv/webm; ogg carries Vorbis, Opus and FLAC). None of them opens other files.
FORMATS = ("wav", "flac", "ogg", "mp3", "aac", "mov", "matroska", "avi")
REFUSED = "cannot decode audio: not a sound file in a supported container"
_READ_BUFFER = 256 * 1024


class _Unnamed:
    """A binary file seen through read/seek/tell only: PyAV takes a ``name`` attribute as the URL."""

    def __init__(self, handle: BinaryIO):
        self._handle = handle
        self.read, self.seek, self.tell = handle.read, handle.seek, handle.tell

    def close(self) -> None:
        self._handle.close()


def _refuse_nested(url: str, flags: int, options: dict):
    raise PermissionError("nested opens are refused")


class _Opened:
    """``with _Opened(source) as container``: the PyAV container over bytes or a path, closed with its file."""

    def __init__(self, source: bytes | str):
        if not (os.path.getsize(source) if isinstance(source, str) else source):
            raise DecodeError("empty file")
        try:
            self._file = _Unnamed(open(source, "rb") if isinstance(source, str) else io.BytesIO(source))
        except OSError as exc:
            raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None
        try:
            self.container = av.open(self._file, "r", buffer_size=_READ_BUFFER, io_open=_refuse_nested,
                                     container_options={"format_whitelist": ",".join(FORMATS),
                                                        "protocol_whitelist": ""})
        except (av.FFmpegError, OSError, ValueError, IndexError):
            self._file.close()
            raise DecodeError(REFUSED) from None
        if not set(self.container.format.name.split(",")) & set(FORMATS):  # the whitelist, checked again
            self.__exit__()
            raise DecodeError(REFUSED)

    def __enter__(self):
        return self.container

    def __exit__(self, *exc_info) -> None:
        try:
            self.container.close()
        finally:
            self._file.close()


def probe_audio(source: bytes | str) -> Decoded:
    """Duration, sample rate and channels from the first audio stream (PyAV) of bytes or a file."""
    try:
        with _Opened(source) as container:
            streams = container.streams.audio
            if not streams:
                raise DecodeError("no audio stream")
            stream = streams[0]
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            decoded_any = next(container.decode(stream), None) is not None
            meta = {"mime": _audio_mime(container.format.name), "duration": duration,
                    "sample_rate": stream.codec_context.sample_rate,
                    "channels": stream.codec_context.channels}
    except DecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise DecodeError(f"cannot decode audio: {reason(exc)}") from None
    if not decoded_any:
        raise DecodeError("audio stream has no decodable frames")
    return Decoded(meta=meta)


_AUDIO_MIMES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg",
                "mov,mp4,m4a,3gp,3g2,mj2": "audio/mp4", "opus": "audio/ogg", "matroska,webm": "audio/x-matroska",
                "avi": "video/x-msvideo"}


def _audio_mime(format_name: str) -> str:
    return _AUDIO_MIMES.get(format_name, f"audio/{format_name.split(',')[0]}")


def decode_audio(source: bytes | str, sample_rate: int, max_seconds: float) -> Decoded:
    """Mono float32 waveform at ``sample_rate`` (first ``max_seconds`` only) plus the file's metadata."""
    probed = probe_audio(source)
    limit = int(sample_rate * max_seconds)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    have = 0
    try:
        with _Opened(source) as container:
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    have += chunks[-1].size
                if have >= limit:
                    break
            else:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1))
    except (av.FFmpegError, OSError, ValueError, DecodeError) as exc:
        if not chunks:  # a damaged tail after good audio still indexes what decoded
            raise DecodeError(str(exc) if isinstance(exc, DecodeError) else
                              f"cannot decode audio: {reason(exc)}") from None
    # "flt" frames are float32 already: no extra copy of up to max_seconds of sound
    wave = np.concatenate(chunks)[:limit].astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    chunks.clear()  # the frames go before the checks, so at most two copies are ever alive
    if wave.size == 0:
        raise DecodeError("audio stream decodes to no samples")
    if max(float(wave.max()), -float(wave.min())) < 1e-4:  # np.abs would allocate a third copy
        raise DecodeError("silent audio")
    probed.wave = wave
    decoded = len(wave) / sample_rate
    header = probed.meta.get("duration")
    if header is None or (len(wave) < limit and decoded < header - 0.5):
        probed.meta["duration"] = decoded  # the whole stream decoded short of its header: a cut-off file
    return probed
