"""Loading torch.export archives (.pt2) without running any pickle they carry.

torch.export.load falls back to torch.load(weights_only=False) and pickle.loads for some
payloads; a hostile archive would run code there. So the archive's payload configs are checked
first, and the load runs with unpickling forced to weights_only / refused outright."""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from worker.engine.pt2_audit import UnsafeProgram, audit_module, audit_program, check_name

MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_PROGRAM_BYTES = 256 * 1024 * 1024


def _refuse(*_: Any, **__: Any) -> Any:
    raise pickle.UnpicklingError("unpickling is disabled for uploaded models")


@contextmanager
def no_unpickling() -> Iterator[None]:
    import torch

    original_load = torch.load
    original_loads = pickle.loads
    original_obj = getattr(torch._C, "_pickle_load_obj", None)

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original_load(*args, **kwargs)

    torch.load = weights_only_load  # type: ignore[assignment]
    pickle.loads = _refuse
    if original_obj is not None:
        torch._C._pickle_load_obj = _refuse
    try:
        yield
    finally:
        torch.load = original_load
        pickle.loads = original_loads
        if original_obj is not None:
            torch._C._pickle_load_obj = original_obj


def check_archive(path: Path, rejected: type[Exception], advice: str) -> None:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise rejected(f"the .pt2 file is not a readable zip archive; {advice}") from exc
    with archive:
        names = archive.namelist()
        formats = [n for n in names if n.endswith("archive_format")]
        if len(formats) != 1 or archive.read(formats[0]).strip() != b"pt2":
            raise rejected(f"the file is not a torch.export .pt2 archive; {advice}")
        prefix = formats[0][: -len("archive_format")]
        programs = [n for n in names if n.startswith(prefix + "models/") and n.endswith(".json")]
        if not programs:
            raise rejected(f"the .pt2 archive holds no exported program; {advice}")
        for name in programs:
            if archive.getinfo(name).file_size > MAX_PROGRAM_BYTES:
                raise rejected("the .pt2 archive's program is implausibly large")
            try:
                audit_program(json.loads(archive.read(name)))
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                reason = str(exc) if isinstance(exc, UnsafeProgram) else "it is not valid JSON"
                raise rejected(
                    f"the .pt2 program cannot be loaded safely: {reason}; {advice}"
                ) from exc
        for name in names:
            rel = name[len(prefix) :]
            if rel.endswith(".pkl") or (
                rel.startswith(("data/weights/", "data/constants/")) and rel.endswith(".pt")
            ):
                raise rejected(
                    f"the .pt2 archive carries a pickle ({rel}); Distillery never unpickles "
                    f"uploads: save it again with a current torch.export.save; {advice}"
                )
            if rel.startswith(("data/weights/", "data/constants/")) and rel.endswith(
                "_config.json"
            ):
                info = archive.getinfo(name)
                if info.file_size > MAX_CONFIG_BYTES:
                    raise rejected(f"the .pt2 archive's {rel} is implausibly large")
                try:
                    config = json.loads(archive.read(name))
                except (ValueError, UnicodeDecodeError) as exc:
                    raise rejected(f"the .pt2 archive's {rel} is not valid JSON") from exc
                entries = config.get("config") if isinstance(config, dict) else None
                if not isinstance(entries, dict):
                    raise rejected(f"the .pt2 archive's {rel} is malformed; {advice}")
                for key, entry in entries.items():
                    try:
                        # FQNs become attribute paths in generated code (see pt2_audit).
                        check_name(key, "the weight name")
                        check_name(str(entry.get("path_name", "")), "the payload name")
                    except (UnsafeProgram, AttributeError) as exc:
                        raise rejected(
                            f"the .pt2 archive's {rel} is malformed: {exc}; {advice}"
                        ) from exc
                    if not isinstance(entry, dict) or entry.get("use_pickle"):
                        raise rejected(
                            f"the .pt2 archive stores {key!r} as a pickle; Distillery never "
                            f"unpickles uploads; {advice}"
                        )
                    path_name = str(entry.get("path_name", ""))
                    if rel.startswith("data/constants/") and not path_name.startswith("tensor_"):
                        raise rejected(
                            f"the .pt2 archive holds a non-tensor constant {key!r} "
                            "(a script or opaque object), which would need unpickling; "
                            f"{advice}"
                        )


def load_pt2_program(path: Path, rejected: type[Exception], advice: str) -> tuple[Any, Any]:
    """The exported program and its runnable module, audited before anything is called."""
    import torch

    check_archive(path, rejected, advice)
    try:
        with no_unpickling():
            program = torch.export.load(str(path))
            module = program.module()
        audit_module(module)
        return program, module
    except rejected:
        raise
    except UnsafeProgram as exc:
        raise rejected(f"the .pt2 program cannot be run safely: {exc}; {advice}") from exc
    except Exception as exc:
        raise rejected(
            f"the .pt2 program could not be loaded ({type(exc).__name__}: {str(exc)[:300]}); "
            f"{advice}"
        ) from exc
