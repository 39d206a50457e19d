"""Subject hierarchy: each run's results in their own folder under the CT's study.

The folder carries the run's record as subject-hierarchy item attributes (``SegSHAP.*``: model, budget, seed,
mask value, device, versions, ...). Two runs never overwrite each other: folder and node names are made
unique. In a scene where nothing created subject-hierarchy items for data nodes (``slicer-core`` without the
Qt plugin handler), items are created explicitly; in Slicer the existing items are re-parented.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import slicer
import vtk

ATTRIBUTE_PREFIX = "SegSHAP."


def sh_node(scene):
    node = scene.GetSubjectHierarchyNode()
    if node is None:
        raise RuntimeError("the scene has no subject hierarchy node")
    return node


def item_of(scene, node, parent_item: int | None = None) -> int:
    """The node's subject-hierarchy item, created (under ``parent_item`` or the scene) when missing."""
    sh = sh_node(scene)
    item = sh.GetItemByDataNode(node)
    if not item:
        item = sh.CreateItem(parent_item if parent_item is not None else sh.GetSceneItemID(), node)
    return item


def study_item_for(scene, ct_node, *, create: bool = False, subject_name: str = "SegSHAP subject",
                   study_name: str | None = None) -> int:
    """The CT's study item. Without one: with ``create`` a subject and study are made and the CT moved into the
    study (for scenes built from files, e.g. the CLI); otherwise the CT's current parent item is used, so a
    user's data tree is never rearranged."""
    sh = sh_node(scene)
    ct_item = item_of(scene, ct_node)
    study_level = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy()
    study = sh.GetItemAncestorAtLevel(ct_item, study_level)
    if study:
        return study
    if not create:
        return sh.GetItemParent(ct_item)
    subject = sh.CreateSubjectItem(sh.GetSceneItemID(), subject_name)
    study = sh.CreateStudyItem(subject, study_name or ct_node.GetName())
    sh.SetItemParent(ct_item, study)
    return study


def unique_child_name(scene, parent_item: int, name: str) -> str:
    """``name``, or ``name (2)``, ``name (3)``, ... so that no sibling under ``parent_item`` has it."""
    sh = sh_node(scene)
    children = vtk.vtkIdList()
    sh.GetItemChildren(parent_item, children)
    taken = {sh.GetItemName(children.GetId(i)) for i in range(children.GetNumberOfIds())}
    if name not in taken:
        return name
    index = 2
    while f"{name} ({index})" in taken:
        index += 1
    return f"{name} ({index})"


def create_run_folder(scene, parent_item: int, name: str, attributes: Mapping[str, object]) -> int:
    """A new folder item (unique name) under ``parent_item`` with ``SegSHAP.<key>`` attributes."""
    sh = sh_node(scene)
    folder = sh.CreateFolderItem(parent_item, unique_child_name(scene, parent_item, name))
    for key, value in attributes.items():
        sh.SetItemAttribute(folder, key if key.startswith(ATTRIBUTE_PREFIX) else ATTRIBUTE_PREFIX + key, str(value))
    sh.SetItemExpanded(folder, True)
    return folder


def place_in_folder(scene, folder_item: int, nodes: Iterable) -> None:
    """Put the nodes' items under the folder (creating items for nodes that have none)."""
    sh = sh_node(scene)
    for node in nodes:
        if node is None:
            continue
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, folder_item)
        else:
            sh.CreateItem(folder_item, node)


def folder_attributes(scene, folder_item: int) -> dict[str, str]:
    """The folder's ``SegSHAP.*`` attributes (prefix stripped)."""
    sh = sh_node(scene)
    return {name[len(ATTRIBUTE_PREFIX):]: sh.GetItemAttribute(folder_item, name)
            for name in sh.GetItemAttributeNames(folder_item) if name.startswith(ATTRIBUTE_PREFIX)}


def folder_nodes(scene, folder_item: int) -> list:
    """The data nodes directly under a folder item."""
    sh = sh_node(scene)
    children = vtk.vtkIdList()
    sh.GetItemChildren(folder_item, children)
    nodes = [sh.GetItemDataNode(children.GetId(i)) for i in range(children.GetNumberOfIds())]
    return [n for n in nodes if n is not None]


def run_folders(scene) -> list[int]:
    """Every SegSHAP run folder in the scene (items with a ``SegSHAP.RunID`` attribute), in creation order."""
    sh = sh_node(scene)
    items = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), items, True)
    found = [items.GetId(i) for i in range(items.GetNumberOfIds())]
    return sorted((i for i in found if sh.GetItemAttribute(i, ATTRIBUTE_PREFIX + "RunID")), key=int)


__all__ = ["sh_node", "item_of", "study_item_for", "unique_child_name", "create_run_folder", "place_in_folder",
           "folder_attributes", "folder_nodes", "run_folders"]
