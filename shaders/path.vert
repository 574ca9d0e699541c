#version 330
// The flown path as a line strip in the world.
uniform mat4 u_view;
uniform mat4 u_proj;

in vec3 in_position;

void main() {
    gl_Position = u_proj * u_view * vec4(in_position, 1.0);
}
