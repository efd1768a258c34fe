"""Capture golden Scribe request frames from the Apache Thrift library's generated client.

How they were made (run from the repository root; needs /usr/bin/thrift and the ``thrift``
package, both in the dev setup)::

    .venv/bin/python tests/golden/make_golden.py

1. ``/usr/bin/thrift --gen py`` compiles ``scribe_compat/idl/scribe.thrift`` (and the included
   ``fb303.thrift``) into a temporary directory.
2. For each case, the generated ``scribe.Client`` writes one call (its ``send_<method>`` half,
   so no server is needed) through ``TFramedTransport`` or ``TBufferedTransport`` over a
   ``TMemoryBuffer``, with ``TBinaryProtocol`` strict (``strictWrite=True``, what scribe_ctrl
   sends) or non-strict (``strictWrite=False``, what scribe_cat and Scribe's forwarder send).
3. The bytes that reached the memory buffer are written to ``<case>.bin``; ``golden.json``
   records what each file must decode to (categories and messages in hex).

The files are committed; regenerate only when adding cases (the bytes must not change).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
IDL = HERE.parent.parent / "scribe_compat" / "idl"


def generate(out_dir: Path) -> None:
    for name in ("fb303.thrift", "scribe.thrift"):
        subprocess.run(
            ["/usr/bin/thrift", "--gen", "py", "-I", str(IDL), "-out", str(out_dir), IDL / name],
            check=True,
        )


def capture(
    modules: Any, method: str, args: tuple[Any, ...], *, framed: bool, strict: bool, seqid: int
) -> bytes:
    from thrift.protocol.TBinaryProtocol import TBinaryProtocol
    from thrift.transport.TTransport import TBufferedTransport, TFramedTransport, TMemoryBuffer

    memory = TMemoryBuffer()
    transport = TFramedTransport(memory) if framed else TBufferedTransport(memory)
    protocol = TBinaryProtocol(transport, strictRead=False, strictWrite=strict)
    client = modules.Client(protocol)
    client._seqid = seqid
    getattr(client, f"send_{method}")(*args)
    return bytes(memory.getvalue())


CATEGORY_NUL = b"cat\x00with\x00nul"
MESSAGE_BINARY = b"\xff\xfe\x00not utf-8 \xc3\x28\n"


def cases(ttypes: Any) -> list[dict[str, Any]]:
    def entry(category: bytes, message: bytes, metadata: dict[bytes, bytes] | None = None) -> Any:
        return ttypes.LogEntry(category=category, message=message, metadata=metadata)

    plain = [(b"test", b"hello scribe\n"), (b"other", b"second message")]
    binary = [(CATEGORY_NUL, MESSAGE_BINARY)]
    out: list[dict[str, Any]] = []
    for framed in (True, False):
        for strict in (True, False):
            form = f"{'framed' if framed else 'unframed'}_{'strict' if strict else 'nonstrict'}"
            out.append(
                dict(
                    file=f"log_{form}",
                    method="Log",
                    entries=plain,
                    framed=framed,
                    strict=strict,
                    seqid=1,
                )
            )
            out.append(
                dict(
                    file=f"log_binary_{form}",
                    method="Log",
                    entries=binary,
                    framed=framed,
                    strict=strict,
                    seqid=7,
                )
            )
    out.append(
        dict(
            file="log_metadata_framed_nonstrict",
            method="Log",
            entries=[(b"meta", b"with metadata")],
            metadata={b"k\x00": b"\xffv"},
            framed=True,
            strict=False,
            seqid=3,
        )
    )
    out.append(
        dict(
            file="log_empty_probe_framed_nonstrict",
            method="Log",
            entries=[],
            framed=True,
            strict=False,
            seqid=4,
        )
    )
    out.append(
        dict(
            file="getCounters_framed_strict",
            method="getCounters",
            framed=True,
            strict=True,
            seqid=5,
        )
    )
    out.append(
        dict(
            file="getStatus_unframed_strict", method="getStatus", framed=False, strict=True, seqid=6
        )
    )
    out.append(
        dict(
            file="reinitialize_framed_nonstrict",
            method="reinitialize",
            framed=True,
            strict=False,
            seqid=8,
        )
    )
    out.append(
        dict(file="shutdown_framed_strict", method="shutdown", framed=True, strict=True, seqid=9)
    )
    for case in out:
        if case["method"] == "Log":
            metadata = case.get("metadata")
            case["args"] = ([entry(c, m, metadata) for c, m in case["entries"]],)
        else:
            case["args"] = ()
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        sys.path.insert(0, tmp)
        scribe_mod = importlib.import_module("scribe.scribe")
        ttypes = importlib.import_module("scribe.ttypes")
        manifest = {}
        for case in cases(ttypes):
            data = capture(
                scribe_mod,
                case["method"],
                case["args"],
                framed=case["framed"],
                strict=case["strict"],
                seqid=case["seqid"],
            )
            (HERE / f"{case['file']}.bin").write_bytes(data)
            manifest[case["file"]] = {
                "method": case["method"],
                "framed": case["framed"],
                "strict": case["strict"],
                "seqid": case["seqid"],
                "entries": [[c.hex(), m.hex()] for c, m in case.get("entries", [])],
                "metadata": {k.hex(): v.hex() for k, v in (case.get("metadata") or {}).items()},
            }
        (HERE / "golden.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        print(f"wrote {len(manifest)} golden frames to {HERE}")


if __name__ == "__main__":
    main()
