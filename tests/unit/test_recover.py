"""recover only ever picks objects the tool owns, for the right domain and host role."""

from __future__ import annotations

from toolkit.recover import owned_maps

LAB_KERNEL = [  # `dmsetup info -c -o name` in the lab (one kernel shared by both fake Dom0s)
    "vg_a-web01", "vg_a-web01-real", "vg_a-db01",
    "vg_a-domubk--20261127T085229Z--ce91--web01--xvda",
    "vg_a-domubk--20261127T085229Z--ce91--web01--xvda-cow",
    "vg_a-domubk--20261127T085229Z--ce91--web01--xvdap1",
    "vg_a-domubk--20261127T085229Z--ce91--web01--xvdap2",
    "vg_b-web01", "vg_b-domubk--20261127T085229Z--ce91--db01--xvdap1",
    "domubk-20261127T085229Z-ce91-web01-xvda", "domubk-20261127T085229Z-ce91-web01-xvdap1",
    "domubk-20261127T085229Z-ce91-db01-xvda",
    "vg_a-domubklookalike", "mydomubk-x-web01-xvdap1",
]


def test_source_takes_only_partition_maps_of_its_own_snapshots():
    picked = owned_maps(LAB_KERNEL, "source", "web01", ["vg_a"], "p")
    assert picked == ["vg_a-domubk--20261127T085229Z--ce91--web01--xvdap1",
                      "vg_a-domubk--20261127T085229Z--ce91--web01--xvdap2"]


def test_peer_takes_only_its_aliases_and_their_partitions_for_the_domain():
    picked = owned_maps(LAB_KERNEL, "peer", "web01", [], "p")
    assert picked == ["domubk-20261127T085229Z-ce91-web01-xvdap1",
                      "domubk-20261127T085229Z-ce91-web01-xvda"]


def test_other_vgs_and_lookalikes_are_never_taken():
    picked = owned_maps(LAB_KERNEL, "source", None, ["vg_b"], "p")
    assert picked == ["vg_b-domubk--20261127T085229Z--ce91--db01--xvdap1"]
    assert not any("lookalike" in n or n.startswith("my") for n in
                   owned_maps(LAB_KERNEL, "peer", None, [], "p"))
