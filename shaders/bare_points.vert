#version 330
// Baseline for benchmarks/viewer.py: the same buffer and point sizes, nothing else.
uniform mat4 u_mvp;
uniform mat4 u_view;
uniform float u_focal;

in vec3 in_position;
in float in_radius;

void main() {
    vec4 eye = u_view * vec4(in_position, 1.0);
    gl_Position = u_mvp * vec4(in_position, 1.0);
    gl_PointSize = 2.0 * in_radius * u_focal / max(-eye.z, 1e-6);
}
