"""Our regf (Windows registry hive) layer: a lazy reader, an in-place editor, log recovery.

Reading (lazy: a file object is read in 4 KiB pages on demand)::

    from offline_ic.registry import Hive
    hive = Hive.open(path_or_fileobj_or_bytes, name="SYSTEM")   # CorruptHiveError on damage
    hive.sequence1, hive.sequence2, hive.is_dirty, hive.size, hive.root
    key = hive.find_key(r"ControlSet001\\Services\\vmicvss")      # None when absent
    key = hive.open_key(r"ControlSet001\\Services\\vmicvss")      # NotFoundError when absent
    key.name, key.path, key.last_written, key.class_name, key.subkeys(), key.subkey("x")
    val = key.value("Start")                                     # '' = default value
    val.name, val.type, val.type_name, val.raw, val.data         # data: str/list/int/bytes

A dirty hive opened with its logs shows the recovered view (in memory, nothing written)::

    hive = Hive.open(path, log1=path_log1, log2=path_log2)
    hive.recovered        # True when log entries were applied
    hive.is_dirty         # still describes the file on disk

Editing (whole hive in memory; only changed 4 KiB pages come back)::

    from offline_ic.registry import HiveEditor
    ed = HiveEditor.from_primary(primary_bytes, log1_bytes, log2_bytes, name="SYSTEM")
    #   (or HiveEditor(clean_bytes); a dirty hive is recovered first or SafetyRefusal)
    ed.set_value(r"ControlSet001\\Services\\vmicvss", "Start", RegType.DWORD, 4)
    ed.set_value(key_path, name, vtype, data)   # data: str, list[str], int, or raw bytes
    ed.delete_value(key_path, name); ed.create_key(path); ed.delete_key(empty_key_path)
    result = ed.commit()   # CommitResult: .pages [(file offset, bytes)] = exactly the 4 KiB
                           # pages that differ from the bytes the editor started from (base
                           # block first), .file_length, .old_file_length, .bytes_written
    ed.hive                # a Hive reading the edited state

Bare files on the host: ``files.edit_hive_file(path, fn)`` (the committed pages written
through the image layer's raw-file journal), ``files.recover_hive_file(path, output)``;
checking: ``check.check_hive(bytes)``.
"""

from offline_ic.registry.editor import CommitResult, HiveEditor, encode_value
from offline_ic.registry.hive import Hive, Key, RegType, Value, type_name
from offline_ic.registry.recovery import RecoveryResult, recover_bytes

__all__ = [
    "CommitResult",
    "Hive",
    "HiveEditor",
    "Key",
    "RecoveryResult",
    "RegType",
    "Value",
    "encode_value",
    "recover_bytes",
    "type_name",
]
