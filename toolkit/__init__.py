"""domu-backup: keep a bootable standby copy of running guests on a peer Dom0."""

__version__ = "0.1.0"

# Everything the tool creates on a host carries this prefix plus the run id
# (snapshot LVs, LVM tags, device-mapper names, mount directories, journals),
# so a sweep can find exactly what it owns and nothing else.
PREFIX = "domubk"
