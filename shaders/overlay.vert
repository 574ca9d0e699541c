#version 330
// 2D overlays (HUD text, bars, clip frames, arrows) in window pixels, origin top-left.
uniform vec2 u_viewport;  // window size in pixels

in vec2 in_position;      // pixels, y down
in vec2 in_uv;

out vec2 v_uv;

void main() {
    vec2 ndc = vec2(in_position.x / u_viewport.x * 2.0 - 1.0,
                    1.0 - in_position.y / u_viewport.y * 2.0);
    gl_Position = vec4(ndc, 0.0, 1.0);
    v_uv = in_uv;
}
