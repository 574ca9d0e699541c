"""Draw calls: the splat cloud, the flown path, and 2D overlays. No window, no input.

Each renderer owns its program and vertex arrays; the caller passes matrices computed by the
camera (``protocol.camera`` conversions only) and the target framebuffer size.
"""

from __future__ import annotations

from dataclasses import dataclass

import moderngl
import numpy as np
from numpy.typing import ArrayLike

from explorer.point_buffer import VERTEX_ATTRIBUTES, VERTEX_FORMAT, PointCloudBuffer
from explorer.programs import load_program, set_uniform, uniform
from explorer.settings import SplatSettings


def _mat(m: np.ndarray) -> bytes:
    """Column-major float32 bytes of a 4x4 row-major numpy matrix (what GLSL expects)."""
    return np.asarray(m, dtype=np.float32).T.tobytes()


@dataclass
class ViewParams:
    """Everything a 3D draw needs about the viewer this frame."""

    view: np.ndarray
    """GL view matrix (world -> eye), from ``opencv_to_gl_view``."""
    proj: np.ndarray
    """GL projection, from ``gl_projection``."""
    focal_px: float
    """Vertical focal length in framebuffer pixels (sizes the splats)."""


class CloudRenderer:
    """The splat cloud of a :class:`PointCloudBuffer`, into the bound framebuffer.

    Anti-aliased (``settings.antialias``, the default): every point is a screen-space
    Gaussian (EWA splatting reduced to isotropic footprints, as the backend's renderer),
    drawn in three passes into an offscreen float target of the bound framebuffer's size:

    1. depth pre-pass: every footprint's disc writes depth only, pushed back along its view
       ray by ``depth_tolerance`` (relative), so the depth buffer holds the front surface
       plus the tolerance;
    2. weighted accumulation: every footprint adds ``(w r, w g, w b, w)`` (additive
       blending into RGBA16F), ``w`` its Gaussian at the pixel; the depth test (no depth
       writes) drops the fragments behind the front surface plus the tolerance;
    3. normalisation: ``colour = sum(w c) / sum(w)`` over a full-screen triangle into the
       bound framebuffer, with the pre-pass depth; where no footprint reached, the
       background the caller cleared stays.

    Without antialias every point is an opaque disc (the nearest point's colour).
    """

    def __init__(self, ctx: moderngl.Context, points: PointCloudBuffer,
                 settings: SplatSettings | None = None):
        self.ctx = ctx
        self.points = points
        self.settings = settings or SplatSettings()
        self.program = load_program(ctx, "splat.vert", "splat.frag")
        self.filter_program = load_program(ctx, "splat_filter.vert", "splat_filter.frag")
        self.resolve_program = load_program(ctx, "splat_resolve.vert", "splat_resolve.frag")
        self._resolve_vao = ctx.vertex_array(self.resolve_program, [])
        self._vaos: dict[str, moderngl.VertexArray] = {}
        self._vao_generation = -1
        self._targets: _FilterTargets | None = None
        lo, hi = ctx.info.get("GL_POINT_SIZE_RANGE", (1.0, 2048.0))
        self.max_point_size = float(hi)

    def _vertex_array(self, program: moderngl.Program) -> moderngl.VertexArray:
        if self._vao_generation != self.points.generation:
            for vao in self._vaos.values():
                vao.release()
            self._vaos.clear()
            self._vao_generation = self.points.generation
        key = "filter" if program is self.filter_program else "discs"
        if key not in self._vaos:
            self._vaos[key] = self.ctx.vertex_array(
                program, [(self.points.vbo, VERTEX_FORMAT, *VERTEX_ATTRIBUTES)]
            )
        return self._vaos[key]

    def draw(self, params: ViewParams) -> None:
        """Draw the cloud into the bound framebuffer (its depth is tested and written)."""
        if self.points.count == 0:
            return
        if self.settings.antialias:
            self._draw_filtered(params)
        else:
            self._draw_discs(params)

    def _set_view(self, program: moderngl.Program, params: ViewParams) -> None:
        """The uniforms both splat programs share: camera, focal length, point size cap."""
        uniform(program, "u_view").write(_mat(params.view))
        uniform(program, "u_proj").write(_mat(params.proj))
        set_uniform(program, "u_focal", float(params.focal_px))
        set_uniform(program, "u_max_size", self.max_point_size)

    def _draw_discs(self, params: ViewParams) -> None:
        self.ctx.enable(moderngl.DEPTH_TEST | moderngl.PROGRAM_POINT_SIZE)
        self.ctx.disable(moderngl.BLEND)
        self._set_view(self.program, params)
        self._vertex_array(self.program).render(moderngl.POINTS, vertices=self.points.count)

    def _draw_filtered(self, params: ViewParams) -> None:
        ctx, s = self.ctx, self.settings
        dst, viewport = ctx.fbo, ctx.viewport
        if self._targets is None or self._targets.size != dst.size:
            if self._targets is not None:
                self._targets.release()
            self._targets = _FilterTargets(ctx, dst.size)
        fbo = self._targets.fbo
        prog = self.filter_program
        self._set_view(prog, params)
        for name, value in (("u_sigma_scale", s.sigma_scale), ("u_min_sigma", s.min_sigma_px),
                            ("u_cover_scale", s.cover_scale)):
            set_uniform(prog, name, value)
        vao = self._vertex_array(prog)
        ctx.enable(moderngl.DEPTH_TEST | moderngl.PROGRAM_POINT_SIZE)
        ctx.disable(moderngl.BLEND)
        # 1. depth pre-pass: the front surface pushed back by the tolerance
        fbo.color_mask, fbo.depth_mask = (False,) * 4, True
        fbo.use()
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        ctx.depth_func = "<"
        set_uniform(prog, "u_push", 1.0 + s.depth_tolerance)
        set_uniform(prog, "u_weighted", 0)
        vao.render(moderngl.POINTS, vertices=self.points.count)
        # 2. weighted accumulation of the footprints within the tolerance
        fbo.color_mask, fbo.depth_mask = (True,) * 4, False
        fbo.use()
        fbo.clear(0.0, 0.0, 0.0, 0.0)  # colour only: the depth mask is off
        ctx.depth_func = "<="
        ctx.enable(moderngl.BLEND)
        ctx.blend_func = moderngl.ONE, moderngl.ONE
        ctx.blend_equation = moderngl.FUNC_ADD, moderngl.FUNC_ADD  # colour and alpha
        set_uniform(prog, "u_push", 1.0)
        set_uniform(prog, "u_weighted", 1)
        vao.render(moderngl.POINTS, vertices=self.points.count)
        # 3. normalisation into the caller's framebuffer, with the pre-pass depth
        ctx.disable(moderngl.BLEND)
        dst.use()
        ctx.viewport = viewport
        ctx.depth_func = "1"  # always: the resolve writes the pre-pass depth as it is
        self._targets.accum.use(location=0)
        self._targets.depth.use(location=1)
        set_uniform(self.resolve_program, "u_accum", 0)
        set_uniform(self.resolve_program, "u_depth", 1)
        set_uniform(self.resolve_program, "u_min_weight", 1e-4)
        self._resolve_vao.render(moderngl.TRIANGLES, vertices=3)
        ctx.depth_func = "<"

    def read_weights(self) -> np.ndarray:
        """H x W float32 sum of footprint weights of the last anti-aliased draw, top row
        first (zeros before any)."""
        if self._targets is None:
            return np.zeros((1, 1), np.float32)
        w, h = self._targets.size
        data = self._targets.accum.read()
        return np.frombuffer(data, np.float16).reshape(h, w, 4)[::-1, :, 3].astype(np.float32)


class _FilterTargets:
    """The anti-aliased cloud's offscreen passes: RGBA16F accumulation and a depth texture."""

    def __init__(self, ctx: moderngl.Context, size: tuple[int, int]):
        self.size = (int(size[0]), int(size[1]))
        self.accum = ctx.texture(self.size, 4, dtype="f2")
        self.accum.filter = moderngl.NEAREST, moderngl.NEAREST
        self.depth = ctx.depth_texture(self.size)
        self.depth.compare_func = ""  # sampled as a value, not compared
        self.depth.filter = moderngl.NEAREST, moderngl.NEAREST
        self.fbo = ctx.framebuffer(color_attachments=[self.accum], depth_attachment=self.depth)

    def release(self) -> None:
        self.fbo.release()
        self.accum.release()
        self.depth.release()


class BarePointsRenderer:
    """The benchmark baseline: same buffer and point sizes, minimal shader, no disc test."""

    def __init__(self, ctx: moderngl.Context, points: PointCloudBuffer):
        self.ctx = ctx
        self.points = points
        self.program = load_program(ctx, "bare_points.vert", "bare_points.frag")
        self._vao: moderngl.VertexArray | None = None
        self._vao_generation = -1

    def draw(self, params: ViewParams) -> None:
        if self._vao is None or self._vao_generation != self.points.generation:
            self._vao = self.ctx.vertex_array(
                self.program,
                [(self.points.vbo, "3f4 4x 1f4", "in_position", "in_radius")],
            )
            self._vao_generation = self.points.generation
        self.ctx.enable(moderngl.DEPTH_TEST | moderngl.PROGRAM_POINT_SIZE)
        uniform(self.program, "u_mvp").write(_mat(params.proj @ params.view))
        uniform(self.program, "u_view").write(_mat(params.view))
        uniform(self.program, "u_focal").value = float(params.focal_px)
        self._vao.render(moderngl.POINTS, vertices=self.points.count)


class PathRenderer:
    """A polyline in the world (the flight since the last commit), drawn over the cloud."""

    def __init__(self, ctx: moderngl.Context, max_points: int = 4096):
        self.ctx = ctx
        self.max_points = max_points
        self.program = load_program(ctx, "path.vert", "flat.frag")
        self.vbo = ctx.buffer(reserve=max_points * 12, dynamic=True)
        self.vao = ctx.vertex_array(self.program, [(self.vbo, "3f4", "in_position")])
        self.count = 0

    def set_points(self, xyz: np.ndarray) -> None:
        xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
        if len(xyz) > self.max_points:  # keep the shape, drop detail
            idx = np.linspace(0, len(xyz) - 1, self.max_points).round().astype(int)
            xyz = xyz[idx]
        self.count = len(xyz)
        if self.count:
            self.vbo.orphan()  # never wait for last frame's draw of the old path
            self.vbo.write(xyz.tobytes())

    def draw(self, params: ViewParams, color=(1.0, 0.8, 0.1, 1.0)) -> None:
        if self.count < 2:
            return
        self.ctx.enable(moderngl.DEPTH_TEST)
        uniform(self.program, "u_view").write(_mat(params.view))
        uniform(self.program, "u_proj").write(_mat(params.proj))
        uniform(self.program, "u_color").value = tuple(color)
        self.vao.render(moderngl.LINE_STRIP, vertices=self.count)


class OverlayRenderer:
    """2D quads and lines in window pixels (origin top-left, y down), alpha blended."""

    def __init__(self, ctx: moderngl.Context, max_vertices: int = 4096):
        self.ctx = ctx
        self.max_vertices = max_vertices
        self.program = load_program(ctx, "overlay.vert", "overlay.frag")
        self.vbo = ctx.buffer(reserve=max_vertices * 16, dynamic=True)
        self.vao = ctx.vertex_array(self.program, [(self.vbo, "2f4 2f4", "in_position", "in_uv")])
        self.viewport = (1, 1)

    def begin(self, width: int, height: int) -> None:
        """Set up 2D drawing over a ``width`` x ``height`` framebuffer."""
        self.viewport = (width, height)
        self.ctx.disable(moderngl.DEPTH_TEST)
        self.ctx.enable(moderngl.BLEND)
        self.ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA
        uniform(self.program, "u_viewport").value = (float(width), float(height))

    def _draw(self, vertices: np.ndarray, mode: int, color, texture=None) -> None:
        vertices = np.ascontiguousarray(vertices, dtype=np.float32)[: self.max_vertices]
        # Fresh storage for every draw: writing into storage that a queued draw still reads
        # would make the driver finish the frame so far first (llvmpipe flushes every tile).
        self.vbo.orphan()
        self.vbo.write(vertices.tobytes())
        uniform(self.program, "u_color").value = tuple(float(c) for c in color)
        set_uniform(self.program, "u_use_texture", 1 if texture is not None else 0)
        if texture is not None:
            texture.use(location=0)
            set_uniform(self.program, "u_texture", 0)
        self.vao.render(mode, vertices=len(vertices))

    def rect(self, x: float, y: float, w: float, h: float, color) -> None:
        self._draw(_quad(x, y, w, h), moderngl.TRIANGLES, color)

    def rects(self, boxes: ArrayLike, color) -> None:
        """Many rectangles in one draw: an (M, 4) array of (x, y, w, h)."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if len(boxes):
            self._draw(np.concatenate([_quad(*box) for box in boxes]), moderngl.TRIANGLES, color)

    def image(self, texture: moderngl.Texture, x: float, y: float, w: float, h: float,
              alpha: float = 1.0) -> None:
        self._draw(_quad(x, y, w, h), moderngl.TRIANGLES, (1.0, 1.0, 1.0, alpha), texture)

    def triangles(self, vertices: np.ndarray, color) -> None:
        """Filled triangles, an (M, 2) array of pixel vertices (3 per triangle), drawn in
        batches that fit the vertex buffer."""
        v = np.asarray(vertices, dtype=np.float32).reshape(-1, 2)
        step = self.max_vertices - self.max_vertices % 3
        for i in range(0, len(v) - len(v) % 3, step):
            chunk = v[i : i + step]
            verts = np.zeros((len(chunk), 4), dtype=np.float32)
            verts[:, :2] = chunk
            self._draw(verts, moderngl.TRIANGLES, color)

    def lines(self, segments: np.ndarray, color) -> None:
        """Line segments as an (M, 2, 2) array of pixel endpoints."""
        seg = np.asarray(segments, dtype=np.float32).reshape(-1, 2)
        if len(seg) < 2:
            return
        verts = np.zeros((len(seg), 4), dtype=np.float32)
        verts[:, :2] = seg
        self._draw(verts, moderngl.LINES, color)


def _quad(x: float, y: float, w: float, h: float) -> np.ndarray:
    x0, y0, x1, y1 = x, y, x + w, y + h
    return np.array(
        [[x0, y0, 0, 0], [x1, y0, 1, 0], [x1, y1, 1, 1],
         [x0, y0, 0, 0], [x1, y1, 1, 1], [x0, y1, 0, 1]],
        dtype=np.float32,
    )


class RenderTarget:
    """An offscreen RGBA8 + depth framebuffer; everything the app shows is drawn here first."""

    def __init__(self, ctx: moderngl.Context, width: int, height: int, samples: int = 0):
        self.ctx = ctx
        self.size = (int(width), int(height))
        self.color = ctx.texture(self.size, 4)
        self.depth = ctx.depth_renderbuffer(self.size)
        self.fbo = ctx.framebuffer(color_attachments=[self.color], depth_attachment=self.depth)

    def use(self) -> None:
        self.fbo.use()

    def clear(self, rgb=(0.0, 0.0, 0.0)) -> None:
        self.fbo.clear(rgb[0], rgb[1], rgb[2], 1.0, depth=1.0)

    def read_rgb(self) -> np.ndarray:
        """H x W x 3 uint8, top row first (image convention)."""
        w, h = self.size
        data = self.fbo.read(components=3, alignment=1)
        return np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)[::-1]

    def release(self) -> None:
        self.fbo.release()
        self.color.release()
        self.depth.release()
