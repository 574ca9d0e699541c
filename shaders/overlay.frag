#version 330
// Textured overlay (u_use_texture = 1) or a flat colour; u_color tints and fades both.
uniform sampler2D u_texture;
uniform int u_use_texture;
uniform vec4 u_color;

in vec2 v_uv;
out vec4 f_color;

void main() {
    vec4 c = u_use_texture == 1 ? texture(u_texture, v_uv) : vec4(1.0);
    f_color = c * u_color;
}
