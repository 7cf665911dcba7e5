"""``ca2st data prepare``: re-encode a dataset into the form the papers trained on, with a new annotation file.

Every video an annotation file names is re-encoded to H.264 (``libx264``, ``yuv420p``) in an MP4 container, with
its short side scaled down to ``short_side`` (never up; both sides even), at ``fps`` (default: the source's),
upright (a phone video's display matrix is applied), with its audio track (AAC: copied when the source's track is
AAC and the whole file is kept, re-encoded otherwise; dropped with ``audio=False``). With ``cut_segments=True``
each annotated segment of an untrimmed video (EPIC-KITCHENS-100 rows) becomes its own clip, ``margin`` seconds of
context on each side included.

Frame ``i`` of an output at ``fps`` shows the source frame on screen at ``i / fps`` (frame indices and times as
:func:`ca2st.read_frames` counts them); audio sample 0 of an output plays with its frame 0, as in the source.

The new annotation file has the input's format and lists only the samples that were prepared; parsed with the
same options (``video_template=`` ...) it points at the outputs under ``out``:

* ``path``-first lists (``path_label``, ``cast_ssv2``, ``cast_k400``, ``ucf101``): the path gets the suffix ``.mp4``;
* ``cast_ek100``, ``kinetics``, ``kinetics_sound``, ``vggsound`` (trimmed clips named by the row's fields through
  ``video_template``): rows unchanged, files at the same relative paths (MP4 inside, whatever the suffix);
* ``epic100``: every column kept; cut segments get ``video_id`` = ``narration_id`` and timestamps and frame numbers
  relative to the clip (the annotated segment inside it: the whole clip without a margin); uncut videos keep their
  timestamps, and their frame numbers are recomputed when the frame rate changes.

Resumable: an output is written under a temporary name (``NAME.part``) and renamed when complete, so an existing
output is finished and skipped, and a ``.part`` file a killed run left is redone. The settings are recorded in
``out/prepare.json``; another run into the same folder with other settings is refused. Failures (a missing,
broken or truncated source, a segment outside its video) are named per file with the reason and counted; they do
not stop the other files.
"""

from .annotation import format_timestamp
from .encode import output_size
from .records import SUPPORTED_FORMATS, PrepareFailure, PrepareReport, PrepareSettings
from .run import prepare_dataset

__all__ = [
    "prepare_dataset",
    "PrepareSettings",
    "PrepareReport",
    "PrepareFailure",
    "SUPPORTED_FORMATS",
    "output_size",
    "format_timestamp",
]
