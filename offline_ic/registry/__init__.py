"""Our regf (Windows registry hive) layer: a lazy reader, an in-place editor, log recovery.

Reading::

    from offline_ic.registry import Hive
    hive = Hive.open(path_or_fileobj_or_bytes)          # lazy; CorruptHiveError on damage
    key = hive.find_key(r"ControlSet001\\Services\\vmicvss")   # None when absent
    key.value("Start").data                               # 3

A dirty hive opened with its logs shows the recovered view in memory:
``Hive.open(path, log1=..., log2=...)`` (``hive.recovered`` says so).
"""

from offline_ic.registry.hive import Hive, Key, RegType, Value, type_name

__all__ = ["Hive", "Key", "RegType", "Value", "type_name"]
