"""Reading the records of a W&B offline run file (run-<id>.wandb), for tests.

The file is W&B's LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version), then
32 KiB blocks of records, each with a 7-byte header (crc32c, length, type: 1 full, 2 first,
3 middle, 4 last) and a protobuf ``Record`` as payload.
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def read_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run log"
    pos, pending, records = HEADER, b"", []
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:
            pos += left_in_block
            continue
        payload = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending + payload)
            records.append(record)
            pending = b""
        else:
            pending += payload
    return records


def logged_artifacts(wandb_dir: Path) -> dict[str, str]:
    """``{artifact name: type}`` over every offline run under ``wandb_dir``."""
    found = {}
    for run_file in Path(wandb_dir).glob("wandb/offline-run-*/run-*.wandb"):
        for record in read_records(run_file):
            if record.WhichOneof("record_type") == "artifact":
                found[record.artifact.name] = record.artifact.type
    return found
