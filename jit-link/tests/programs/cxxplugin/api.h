/* What the host program (host.cpp) offers its plugins, and what they implement. */
struct Shape {
  virtual ~Shape() {}
  virtual double area() const = 0;
  virtual void validate(int x) const = 0;
};
typedef Shape *(*Factory)();
void register_factory(const char *name, Factory f);
int host_check(int x);
