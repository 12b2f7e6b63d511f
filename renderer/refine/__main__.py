"""`python -m renderer.refine`: train the generic warp refiner (renderer.refine.train)."""

from renderer.refine.train import main

if __name__ == "__main__":
    main()
