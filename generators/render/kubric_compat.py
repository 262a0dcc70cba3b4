"""Kubric on Blender 4.2, from the outside.

Kubric targets Blender 2.93. Its ``Blender.add_asset`` is a single-dispatch method, so Vario
registers handlers for its own asset types here instead of patching Kubric:

- ``VarioMesh``: an OBJ imported with ``wm.obj_import`` (``import_scene.obj`` is gone), axes
  kept as in the file (as PyBullet reads them), parts joined into one object, and the origin
  moved to the centre of the mesh's box (Vario's object reference point).
- ``VarioMaterial``: a Principled BSDF using Blender 4's input names (``Specular IOR Level``,
  ``Transmission Weight``, ``Emission Color``; ``Specular Tint`` became a colour), with an
  optional image texture multiplied into the base colour (as PyBullet's renderer does).
- ``repair_render_passes``: Blender 4 routes an AOV output by its ``aov_name``; Kubric names
  only the node, which leaves the object-coordinates pass empty.

Importing this module requires ``bpy`` and ``kubric``; only render workers import it.
"""

from __future__ import annotations

import bpy
import kubric as kb
import mathutils
import traitlets as tl
from kubric.renderer import blender_utils
from kubric.renderer.blender import AttributeSetter, Blender, register_object3d_setters

# Kubric's traits -> Blender 4 Principled BSDF inputs (and a converter where the type changed)
_BSDF_INPUTS = {
    "color": ("Base Color", None),
    "roughness": ("Roughness", None),
    "metallic": ("Metallic", None),
    "specular": ("Specular IOR Level", None),
    "specular_tint": ("Specular Tint", lambda t: (t, t, t, 1.0)),
    "ior": ("IOR", None),
    "transmission": ("Transmission Weight", None),
    "emission": ("Emission Color", None),
}


class VarioMesh(kb.FileBasedObject):
    """A catalog mesh whose origin is moved to ``mesh_center`` (mesh units) on import."""

    mesh_center = tl.Tuple(tl.Float(), tl.Float(), tl.Float(), default_value=(0.0, 0.0, 0.0))


class VarioMaterial(kb.PrincipledBSDFMaterial):
    """Principled BSDF with an optional texture multiplied into ``color``."""

    texture = tl.Unicode(None, allow_none=True)


def _add_mesh(self: Blender, asset: VarioMesh) -> bpy.types.Object:
    bpy.ops.object.select_all(action="DESELECT")
    bpy.ops.wm.obj_import(filepath=asset.render_filename, forward_axis="Y", up_axis="Z")
    parts = list(bpy.context.selected_objects)
    if len(parts) > 1:
        with bpy.context.temp_override(
            active_object=parts[0], selected_editable_objects=parts, object=parts[0]
        ):
            bpy.ops.object.join()
    obj = parts[0]
    obj.data.transform(mathutils.Matrix.Translation([-c for c in asset.mesh_center]))
    obj.data.materials.clear()
    register_object3d_setters(asset, obj)
    asset.observe(
        AttributeSetter(obj, "active_material", converter=self._convert_to_blender_object),
        "material",
    )
    asset.observe(AttributeSetter(obj, "scale"), "scale")
    return obj


def _add_material(self: Blender, asset: VarioMaterial) -> bpy.types.Material:
    mat = bpy.data.materials.new(asset.uid)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    for trait, (name, convert) in _BSDF_INPUTS.items():
        asset.observe(AttributeSetter(bsdf.inputs[name], "default_value", convert), trait)
    if asset.texture:
        image = nodes.new("ShaderNodeTexImage")
        image.image = bpy.data.images.load(asset.texture, check_existing=True)
        tint = nodes.new("ShaderNodeRGB")
        asset.observe(AttributeSetter(tint.outputs[0], "default_value"), "color")
        multiply = nodes.new("ShaderNodeMix")
        multiply.data_type, multiply.blend_type = "RGBA", "MULTIPLY"
        multiply.inputs["Factor"].default_value = 1.0
        a, b = (s for s in multiply.inputs if s.type == "RGBA")
        links.new(image.outputs["Color"], a)
        links.new(tint.outputs[0], b)
        result = next(s for s in multiply.outputs if s.type == "RGBA")
        links.new(result, bsdf.inputs["Base Color"])
    return mat


def repair_render_passes() -> None:
    """Call after creating Kubric's ``Blender`` view: name its AOV outputs for Blender 4."""
    for material in bpy.data.materials:
        for node in material.node_tree.nodes if material.node_tree else ():
            if node.bl_idname == "ShaderNodeOutputAOV" and not node.aov_name:
                node.aov_name = node.name


_dispatch = Blender.__dict__["add_asset"]
_dispatch.register(VarioMesh)(blender_utils.prepare_blender_object(_add_mesh))
_dispatch.register(VarioMaterial)(blender_utils.prepare_blender_object(_add_material))
