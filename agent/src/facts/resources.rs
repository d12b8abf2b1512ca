//! Resource figures: load, CPU busy and steal, memory and swap, pressure,
//! conntrack, listen overflows, disk use, and the memory trend.
