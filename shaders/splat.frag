#version 330
// Round splat: keep the fragments inside the point's disc, discard the square's corners.
flat in vec3 v_color;
out vec4 f_color;

void main() {
    vec2 d = gl_PointCoord * 2.0 - 1.0;
    if (dot(d, d) > 1.0) {
        discard;
    }
    f_color = vec4(v_color, 1.0);
}
