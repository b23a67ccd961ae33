"""The regression inputs of the two archive harnesses for LibTorch's archive
reader's findings (docs/FUZZING.md, "The archive check"): valid inputs from
the committed corpus with one claim inflated, so that each reaches the claim
LibTorch's reader would trust. Run from the repository root:

    python3 fuzz/make_crafted_archives.py

writes fuzz/corpus/{optimizer_checkpoint,run_state}/regression-*:
 - inflated-storage: the largest tensor storage (the optimizer's state
   payload) claims four times the bytes of its record;
 - huge-string: a string in data.pkl claims 0xFB000000 bytes;
 - huge-memo-index: a memo index of 0xF0000000;
 - view-past-storage: the largest tensor's storage offset moved to 1, so
   that its view reaches one element past its storage.
"""
import io
import struct
import zipfile

CORPUS = 'fuzz/corpus'
# (harness, seed, prefix bytes the harness reads before the file)
SEEDS = [('optimizer_checkpoint', 'seed-sam', 1), ('run_state', 'seed-valid-run-pt', 1)]


def rewrite(archive, patch):
    """The archive with data.pkl replaced by patch(data.pkl), records in order and stored."""
    source = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith('/data.pkl'):
                data = patch(data, source)
            # A fixed date: the same inputs give the same files.
            target.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def inflate_largest_storage(pickle, source):
    sizes = [i.file_size for i in source.infolist() if '/data/' in i.filename]
    largest = max(sizes)
    count = (b'M' + struct.pack('<H', largest)) if largest < 65536 else (b'J' + struct.pack('<i', largest))
    at = pickle.index(count + b'tQ')
    return pickle[:at] + b'J' + struct.pack('<i', 4 * largest) + pickle[at + len(count):]


def view_past_storage(pickle, source):
    sizes = [i.file_size for i in source.infolist() if '/data/' in i.filename]
    largest = max(sizes)
    count = (b'M' + struct.pack('<H', largest)) if largest < 65536 else (b'J' + struct.pack('<i', largest))
    at = pickle.index(count + b'tQ') + len(count) + 2
    at += {ord('q'): 2, ord('r'): 5}.get(pickle[at], 0)  # the storage's memo entry
    assert pickle[at:at + 2] == b'K\x00', pickle[at:at + 2]  # storage offset 0
    return pickle[:at] + b'K\x01' + pickle[at + 2:]


def first_string(pickle):
    at = pickle.index(b'X')
    length = struct.unpack('<I', pickle[at + 1:at + 5])[0]
    return at, length


def huge_string(pickle, source):
    at, _ = first_string(pickle)
    return pickle[:at + 1] + struct.pack('<I', 0xFB000000) + pickle[at + 5:]


def huge_memo_index(pickle, source):
    at = pickle.index(b'q\x00')  # the first memo entry
    return pickle[:at] + b'r' + struct.pack('<I', 0xF0000000) + pickle[at + 2:]


for harness, seed, prefix in SEEDS:
    raw = open(f'{CORPUS}/{harness}/{seed}', 'rb').read()
    head, archive = raw[:prefix], raw[prefix:]
    for name, patch in [('inflated-storage', inflate_largest_storage), ('huge-string', huge_string),
                        ('huge-memo-index', huge_memo_index), ('view-past-storage', view_past_storage)]:
        open(f'{CORPUS}/{harness}/regression-{name}', 'wb').write(head + rewrite(archive, patch))
