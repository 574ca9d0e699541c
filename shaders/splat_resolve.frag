#version 330
// Normalisation: colour = sum(w c) / sum(w); pixels no footprint reached keep the
// background. The pre-pass depth goes to the target, so what is drawn next (the flown path)
// is hidden behind the cloud.
uniform sampler2D u_accum;  // RGBA float: (sum w c, sum w)
uniform sampler2D u_depth;  // the pre-pass depth
uniform float u_min_weight;

out vec4 f_color;

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    vec4 acc = texelFetch(u_accum, p, 0);
    if (acc.a <= u_min_weight) {
        discard;
    }
    f_color = vec4(acc.rgb / acc.a, 1.0);
    gl_FragDepth = texelFetch(u_depth, p, 0).r;
}
