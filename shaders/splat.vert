#version 330
// Perspective-correct round splats: a point's world radius becomes its on-screen diameter
// through the focal length (pixels) over its eye-space depth. 4D points (in_motion.w = period
// > 0) have no weights here: each shows one of its two looping copies, p + tau d while a fixed
// per-point threshold is at least tau, else p - (1 - tau) d (symmetric splatting dithered).
uniform mat4 u_view;      // world -> GL eye (from an OpenCV pose, see protocol.camera)
uniform mat4 u_proj;
uniform float u_focal;    // focal length in framebuffer pixels
uniform float u_max_size; // largest point size the driver allows
uniform float u_time;     // seconds on the explorer's clock
uniform int u_animate;    // 0: every point at its rest position

in vec3 in_position;
in vec3 in_color;         // normalised from uint8
in float in_radius;       // world units
in vec4 in_motion;        // displacement over one loop (world units), period (s; 0 static)

flat out vec3 v_color;  // one colour per splat: no interpolation setup

void main() {
    vec3 p = in_position;
    if (u_animate == 1 && in_motion.w > 0.0) {
        float tau = fract(u_time / in_motion.w);
        float threshold = float((uint(gl_VertexID) * 2654435761u) >> 8) / 16777216.0;
        p += (threshold >= tau ? tau : tau - 1.0) * in_motion.xyz;
    }
    vec4 eye = u_view * vec4(p, 1.0);
    gl_Position = u_proj * eye;
    float depth = max(-eye.z, 1e-6);
    gl_PointSize = clamp(2.0 * in_radius * u_focal / depth, 1.0, u_max_size);
    v_color = in_color;
}
