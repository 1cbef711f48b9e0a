"""Check the buffer's write-ahead log before SQLite opens it, and rebuild what it would drop.

SQLite replays a WAL up to its first frame with a bad checksum and silently ignores the rest, so
damage in the middle of `buffer.db-wal` loses committed (acknowledged) captures with no error, and
`quick_check` sees nothing wrong afterwards. We read the file ourselves, per the documented format
(https://www.sqlite.org/fileformat2.html#walformat) -- our own code because no library exposes it:

- a 32-byte header: magic, format version, page size, checkpoint sequence, salt-1, salt-2, and a
  checksum of the first 24 bytes;
- frames, each a 24-byte header (page number, database size in pages for a commit frame else 0,
  salt-1, salt-2, checksum-1, checksum-2) followed by one page;
- checksums are cumulative: each frame's is computed from the previous frame's (the header's for
  the first) over the frame header's first 8 bytes and the page.

Because each frame stores its running checksum, a frame can be verified on its own from its
predecessor's stored value: one damaged frame does not hide whether the frames after it are whole.
Whole frames after the break that carry the header's salts were written in this WAL generation and
are lost to SQLite; if one of them is a commit frame, acknowledged transactions are lost. The
`-shm` index also records how many frames were committed (mxFrame): more than the WAL now holds
means the WAL was cut short.
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

WAL_HEADER = 32
FRAME_HEADER = 24
_MAGIC_LE = 0x377F0682  # checksums over little-endian words
_MAGIC_BE = 0x377F0683  # checksums over big-endian words
_SHM_HEADER = 48  # one copy of the wal-index header; two identical copies open the -shm file


class WalFormatError(ValueError):
    """The bytes are not a WAL this reader understands."""


@dataclass(frozen=True)
class WalCheck:
    """What the WAL holds, and what SQLite would drop from it."""

    page_size: int
    frames: int  # complete frames in the file
    replayed: int  # frames SQLite replays: the valid prefix up to its last commit frame
    lost: int  # frames of this generation SQLite will never replay (whole ones after the break)
    lost_commits: int  # commit frames among them: acknowledged transactions
    damaged_frames: int  # frames of this generation whose checksum does not hold
    shm_frames: int | None  # frames the -shm index says were committed, when it is readable
    header_ok: bool = True

    @property
    def damaged(self) -> bool:
        """Committed work that SQLite would silently drop."""
        cut_short = self.shm_frames is not None and self.shm_frames > self.replayed
        return not self.header_ok or self.lost_commits > 0 or cut_short

    @property
    def frames_lost(self) -> int:
        """How many committed frames SQLite would drop (the alarm's number)."""
        if not self.header_ok:
            return self.frames
        by_index = max(0, (self.shm_frames or 0) - self.replayed)
        return max(self.lost, by_index)


def _checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _header(data: bytes) -> tuple[bool, int, int, int, int, int]:
    """(big_endian, page_size, salt1, salt2, cksum1, cksum2) of a WAL header, or raise."""
    if len(data) < WAL_HEADER:
        raise WalFormatError(f"WAL header is {len(data)} bytes, not {WAL_HEADER}")
    magic, version, page_size, _seq, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:32])
    if magic not in (_MAGIC_LE, _MAGIC_BE):
        raise WalFormatError(f"bad WAL magic {magic:#010x}")
    if version != 3007000:
        raise WalFormatError(f"unknown WAL format version {version}")
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        raise WalFormatError(f"bad WAL page size {page_size}")
    big = magic == _MAGIC_BE
    if _checksum(data[:24], big, 0, 0) != (c1, c2):
        raise WalFormatError("WAL header checksum does not match")
    return big, page_size, salt1, salt2, c1, c2


def check_wal(wal: Path, shm: Path | None = None) -> WalCheck | None:
    """Read `wal` (and its `-shm` index if given) and say what SQLite would replay and drop.

    None when there is no WAL or it holds no frame: nothing to check.
    """
    try:
        data = wal.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < WAL_HEADER:
        return None
    try:
        big, page_size, salt1, salt2, c1, c2 = _header(data)
    except WalFormatError:
        # SQLite ignores a WAL whose header fails: every frame in it is lost
        page_size = _page_size_guess(data)
        frames = (len(data) - WAL_HEADER) // (FRAME_HEADER + page_size) if page_size else 0
        if not frames:
            return None
        return WalCheck(page_size, frames, 0, frames, 0, 0, None, header_ok=False)
    size = FRAME_HEADER + page_size
    frames = (len(data) - WAL_HEADER) // size
    replayed = 0
    broken = False
    lost = lost_commits = damaged = 0
    pending = pending_damaged = 0  # frames after the break since the last whole commit frame
    prev = (c1, c2)
    for index in range(frames):
        off = WAL_HEADER + index * size
        pgno, commit, fs1, fs2, k1, k2 = struct.unpack(">6I", data[off : off + FRAME_HEADER])
        ours = (fs1, fs2) == (salt1, salt2)
        whole = ours and pgno > 0 and _frame_sum(data, off, size, big, prev) == (k1, k2)
        if not broken and whole:
            if commit:
                replayed = index + 1
        elif ours:
            broken = True
            pending += 1
            pending_damaged += 0 if whole else 1
            if whole and commit:  # a transaction that committed after the break: lost
                lost += pending
                damaged += pending_damaged
                lost_commits += 1
                pending = pending_damaged = 0
        else:
            broken = True  # a frame of an older generation: SQLite stops here, as it should
        prev = (k1, k2)  # the next frame's checksum runs on from this frame's stored one
    # frames after the last commit are an unfinished transaction nobody was told was stored
    return WalCheck(
        page_size,
        frames,
        replayed,
        lost,
        lost_commits,
        damaged,
        _shm_frames(shm, salt1, salt2) if shm is not None else None,
    )


def _frame_sum(
    data: bytes, off: int, size: int, big: bool, prev: tuple[int, int]
) -> tuple[int, int]:
    s0, s1 = _checksum(data[off : off + 8], big, *prev)
    return _checksum(data[off + FRAME_HEADER : off + size], big, s0, s1)


def _page_size_guess(data: bytes) -> int:
    page_size = struct.unpack(">I", data[8:12])[0]
    return page_size if 512 <= page_size <= 65536 and not page_size & (page_size - 1) else 0


def _shm_frames(shm: Path, salt1: int, salt2: int) -> int | None:
    """mxFrame of the wal-index header when its two copies agree and it is for this WAL."""
    try:
        with shm.open("rb") as f:
            head = f.read(2 * _SHM_HEADER)
    except FileNotFoundError:
        return None
    if len(head) < 2 * _SHM_HEADER or head[:_SHM_HEADER] != head[_SHM_HEADER:]:
        return None  # being written, or never initialised: no claim to check against
    # native byte order, as SQLite writes it: iVersion, unused, iChange, isInit, bigEndCksum,
    # szPage, mxFrame, nPage, aFrameCksum[2], aSalt[2], aCksum[2]
    version, _, _, is_init, _, _, mx_frame, _, _, _, s1, s2, _, _ = struct.unpack(
        "=3I2BH8I", head[:_SHM_HEADER]
    )
    if version != 3007000 or not is_init:
        return None
    # the index stores the salts as the WAL header's bytes, read natively
    salts = struct.unpack("=2I", struct.pack(">2I", salt1, salt2))
    if (s1, s2) != salts:
        return None
    return int(mx_frame)


def rebuild(db: Path, wal: Path, out: Path) -> int:
    """Write `out`: the database file with every whole frame of the WAL's current generation
    applied in order, up to the last whole commit frame, skipping damaged frames. Return how
    many frames were applied. The result is for reading captures back, never for running on."""
    data = wal.read_bytes()
    big, page_size, salt1, salt2, c1, c2 = _header(data)
    shutil.copyfile(db, out)
    size = FRAME_HEADER + page_size
    frames = (len(data) - WAL_HEADER) // size
    pages: dict[int, bytes] = {}
    applied: dict[int, bytes] = {}
    count = uncommitted = 0
    prev = (c1, c2)
    for index in range(frames):
        off = WAL_HEADER + index * size
        pgno, commit, fs1, fs2, k1, k2 = struct.unpack(">6I", data[off : off + FRAME_HEADER])
        ours = (fs1, fs2) == (salt1, salt2) and pgno > 0
        if ours and _frame_sum(data, off, size, big, prev) == (k1, k2):
            pages[pgno] = data[off + FRAME_HEADER : off + size]
            uncommitted += 1
            if commit:
                applied.update(pages)
                pages = {}
                count += uncommitted
                uncommitted = 0
        prev = (k1, k2)
    with out.open("r+b") as f:
        for pgno, page in sorted(applied.items()):
            f.seek((pgno - 1) * page_size)
            f.write(page)
    return count


def set_aside_if_damaged(db: Path, stamp: str) -> tuple[Path, WalCheck] | None:
    """Before SQLite opens `db`: if its WAL would drop committed frames, copy the database, the
    WAL and its index aside as `<db>.damaged-<stamp>` (+ `-wal`, `-shm`) and say what was found.
    The originals stay in place: SQLite opens them and keeps what it can replay."""
    wal = db.with_name(db.name + "-wal")
    shm = db.with_name(db.name + "-shm")
    check = check_wal(wal, shm)
    if check is None or not check.damaged or not db.exists():
        return None
    aside = db.with_name(f"{db.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        aside = db.with_name(f"{db.name}.damaged-{stamp}-{n}")
        n += 1
    shutil.copyfile(db, aside)
    shutil.copyfile(wal, aside.with_name(aside.name + "-wal"))
    if shm.exists():
        shutil.copyfile(shm, aside.with_name(aside.name + "-shm"))
    return aside, check
