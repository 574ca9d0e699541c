#version 330
// u_weighted = 0: the depth pre-pass (colour writes are masked off; only the disc's depth
// counts). u_weighted = 1: add (colour * w, w) into the float accumulation target.
uniform int u_weighted;

flat in vec3 v_color;
flat in float v_falloff;
flat in float v_weight;     // a moving point's copy weighs its share of the loop
out vec4 f_accum;

void main() {
    vec2 q = gl_PointCoord * 2.0 - 1.0;  // the footprint's disc is the unit disc
    float q2 = dot(q, q);
    if (q2 > 1.0) {
        discard;
    }
    if (u_weighted == 0) {
        f_accum = vec4(0.0);
        return;
    }
    float w = v_weight * exp(-v_falloff * q2);
    f_accum = vec4(v_color * w, w);
}
