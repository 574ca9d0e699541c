#version 330
// Perspective-correct round splats: a point's world radius becomes its on-screen diameter
// through the focal length (pixels) over its eye-space depth.
uniform mat4 u_view;      // world -> GL eye (from an OpenCV pose, see protocol.camera)
uniform mat4 u_proj;
uniform float u_focal;    // focal length in framebuffer pixels
uniform float u_max_size; // largest point size the driver allows

in vec3 in_position;
in vec3 in_color;         // normalised from uint8
in float in_radius;       // world units

flat out vec3 v_color;  // one colour per splat: no interpolation setup

void main() {
    vec4 eye = u_view * vec4(in_position, 1.0);
    gl_Position = u_proj * eye;
    float depth = max(-eye.z, 1e-6);
    gl_PointSize = clamp(2.0 * in_radius * u_focal / depth, 1.0, u_max_size);
    v_color = in_color;
}
