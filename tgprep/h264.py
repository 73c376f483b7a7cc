"""Which H.264 packets of an MP4 a decoder may skip: the few bytes of the bitstream that say so.

An H.264 picture whose slices have nal_ref_idc 0 is never a reference: no other picture is predicted from it, so
a decoder that is never sent it decodes every other picture to the same pixels (FFmpeg's skip_frame=nonref rests
on the same rule). Video samples are encoded so that most pictures are such B-frames (tgprep.video_sample), and a
loader sends the decoder only the reference pictures and the ones it wants.

An MP4 (ISO/IEC 14496-15) stores each picture as NAL units, each behind a big-endian length of 1, 2 or 4 bytes,
the size given in the avcC record of the stream's extradata. The bytes come from a shard, so every length is
checked against the packet before it is followed; anything unexpected counts as a reference (decoded, never
skipped), which at worst costs time.
"""

SLICE_TYPES = (1, 5)  # coded slice of a non-IDR picture, of an IDR picture
MAX_UNITS = 16  # NAL units looked at before the first slice (access unit delimiter, SPS, PPS, SEI...)


def length_size(extradata: bytes | None) -> int | None:
    """The size in bytes of the NAL unit lengths, from an avcC record; None if extradata is not one (then no
    packet is known to be skippable)."""
    if not extradata or len(extradata) < 7 or extradata[0] != 1:
        return None
    size = (extradata[4] & 3) + 1
    return size if size in (1, 2, 4) else None


def is_disposable(packet, size: int | None) -> bool:
    """Whether a packet (bytes-like: an av.Packet) is a picture that no other picture refers to: its first slice
    has nal_ref_idc 0 (the standard makes it the same for every slice of a picture). size: from length_size."""
    if size is None:
        return False
    data = memoryview(packet)
    offset = 0
    for _ in range(MAX_UNITS):
        if offset + size >= len(data):
            return False
        length = int.from_bytes(data[offset:offset + size], "big")
        if length < 1 or offset + size + length > len(data):
            return False
        header = data[offset + size]
        if header & 0x80:  # forbidden_zero_bit: not H.264
            return False
        if header & 0x1F in SLICE_TYPES:
            return header >> 5 == 0
        offset += size + length
    return False
