"""`harness list`: what is registered, read from the metadata index (no torch, no model code)."""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from harness.cli import index


def list_command(what: str, data_dir: Path | None) -> int:
    if what == "methods":
        rows = []
        for name in index.method_names():
            info = index.method_info(name)
            rows.append([name, info["display_name"], info["requirements"]["needs"],
                         ", ".join(sorted(info["search_space"])) or "-", info["description"]])
        print(tabulate(rows, headers=["method", "table name", "needs", "tunes", "description"]))
    else:
        rows = []
        for name in index.task_names():
            info = index.task_info(name)
            modalities = ", ".join(f"{m['name']}:{m['kind']}{list(m['shape'])}" for m in info["modalities"])
            files = info["source"]["files"]
            present = "yes" if index.data_present(info, data_dir) else f"no ({', '.join(files)})"
            rows.append([name, info["suite"], modalities, f"{info['label_kind']}/{info['num_classes']}",
                         info["source"]["kind"], present, info["description"]])
        print(tabulate(rows, headers=["task", "suite", "modalities", "labels", "source", "data", "description"]))
    return 0
