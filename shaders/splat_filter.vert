#version 330
// Anti-aliased splats (EWA splatting reduced to isotropic footprints): a point of screen
// radius r = world radius * focal / depth is a Gaussian of sigma max(sigma_scale r, min_sigma)
// pixels, drawn over a disc of radius R = max(cover_scale r, 2 sigma) pixels (so no splat is
// smaller than a pixel). The same shader draws the depth pre-pass (u_push = 1 + tolerance:
// the surface is pushed back along the view ray, its screen position unchanged) and the
// weighted accumulation (u_push = 1).
// 4D points: a point with a looping motion (in_motion.w = period > 0) is drawn as two copies
// (Make-It-4D's symmetric splatting): u_copy = 0 at p + tau d with weight 1 - tau, u_copy = 1
// (a second draw of the moving points only) at p - (1 - tau) d with weight tau, where
// tau = fract(u_time / period). The loop has no seam: tau -> 1 and tau = 0 show the same.
uniform mat4 u_view;        // world -> GL eye (from an OpenCV pose, see protocol.camera)
uniform mat4 u_proj;
uniform float u_focal;      // focal length in framebuffer pixels
uniform float u_max_size;   // largest point size the driver allows
uniform float u_push;
uniform float u_sigma_scale;
uniform float u_min_sigma;  // pixels
uniform float u_cover_scale;
uniform float u_time;       // seconds on the explorer's clock
uniform int u_animate;      // 0: every point at its rest position
uniform int u_copy;         // 0: forward copies (every point), 1: backward (moving points)

in vec3 in_position;
in vec3 in_color;           // normalised from uint8
in float in_radius;         // world units
in vec4 in_motion;          // displacement over one loop (world units), period (s; 0 static)

flat out vec3 v_color;
flat out float v_falloff;   // R^2 / (2 sigma^2): weight = exp(-falloff |q|^2), q in the unit disc
flat out float v_weight;    // the copy's share of the point (1 for a static point)

void main() {
    vec3 p = in_position;
    v_weight = 1.0;
    if (u_animate == 1 && in_motion.w > 0.0) {
        float tau = fract(u_time / in_motion.w);
        p += (u_copy == 0 ? tau : tau - 1.0) * in_motion.xyz;
        v_weight = u_copy == 0 ? 1.0 - tau : tau;
    }
    vec4 eye = u_view * vec4(p, 1.0);
    gl_Position = u_proj * vec4(eye.xyz * u_push, 1.0);
    float r = in_radius * u_focal / max(-eye.z, 1e-6);
    float sigma = max(u_sigma_scale * r, u_min_sigma);
    float reach = min(max(u_cover_scale * r, 2.0 * sigma), 0.5 * u_max_size);
    gl_PointSize = 2.0 * reach;
    v_color = in_color;
    v_falloff = reach * reach / (2.0 * sigma * sigma);
}
